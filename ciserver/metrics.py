"""What /metrics tells Prometheus, read from the database and Redis when it scrapes.

Builds, jobs and deployments by status, and the build and job duration histograms, are counted from
the database at scrape time by a custom collector rather than kept in the memory of the process that
changed them: those changes happen in workers on any number of hosts, which Prometheus does not
scrape, and a counter in memory would start again at every restart. The database already holds every
start and end, so the numbers are right after a restart and whatever the number of processes.

A scrape costs a few queries and two Redis round trips: builds, jobs and deployments grouped by
status (builds' and deployments' on their status index), the ended builds and jobs counted per status
and duration bucket in SQL (each row's seconds computed once), the commit statuses outbox counted,
then the queues and RQ's worker registry. The duration queries read every ended row: with 100,000
builds of 3 jobs, a scrape's database part took 1.4 to 2.3 s on a 2-core machine busy with other
work, on SQLite and PostgreSQL alike (benchmarks/metrics_scrape.py). So builds, jobs and deployments
are counted again only when the newest event (written with every change of their state) has moved,
or every RECOUNT_AFTER seconds: an idle server's scrape took 1 ms. On SQLite the reads take no write
lock (see store.db), so a scrape never waits for, nor delays, a worker.

Webhook deliveries are the exception: a delivery leaves no row when it is refused, so the API
process counts them as it answers (`webhook_deliveries`, reset by a restart as Prometheus expects of a
counter). A source that does not answer is reported as `ciserver_metrics_source_up{source} 0` instead
of failing the whole scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from functools import lru_cache
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, Engine, case, create_engine, extract, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute

from ciserver import __version__, queue
from ciserver.config import Settings
from ciserver.states import DeploymentStatus, Status
from ciserver.store.db import engine_for
from ciserver.store.models import Build, CommitStatus, Deployment, Event, Job

log = logging.getLogger(__name__)

# Seconds the counts of an idle server are kept before they are read again with no new event.
RECOUNT_AFTER = 120.0

# Seconds. A busybox job takes a third of a second and a push goes green in about one; the longest a
# job may run by default is 6 h (CISERVER_JOB_TIMEOUT_MAX).
DURATION_BUCKETS: tuple[float, ...] = (
    0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600,
)  # fmt: skip


def webhook_deliveries(registry: CollectorRegistry) -> Counter:
    """The API's count of webhook answers, by forge and HTTP status."""
    return Counter(
        "ciserver_webhook_deliveries",
        "Webhook deliveries answered by this API process, by forge and HTTP status.",
        ["forge", "status"],
        registry=registry,
    )


def metrics_registry(settings: Settings) -> tuple[CollectorRegistry, Counter]:
    """A registry of its own per app (not prometheus_client's global one, which holds the Python
    process's own metrics and refuses a second app's collector), and its webhook counter."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(settings))
    return registry, webhook_deliveries(registry)


class StateCollector(Collector):
    """The database's builds, jobs and deployments and Redis's queues and workers, read at each scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # (newest event id, when, the families counted then); scrapes may run in several threads.
        self._cached: tuple[int | None, float, list[Metric]] | None = None
        self._lock = threading.Lock()
        self.recount_after = RECOUNT_AFTER

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "ciserver_info", "The ciserver version serving these metrics.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        up = GaugeMetricFamily(
            "ciserver_metrics_source_up",
            "1 when this scrape could read the source (database, redis), else 0.",
            labels=["source"],
        )
        database = list(self._database())
        yield from database
        up.add_metric(["database"], 1 if database else 0)
        redis = list(self._redis()) if self.settings.redis_url else []
        yield from redis
        up.add_metric(["redis"], 1 if redis else 0)
        yield up

    def _database(self) -> Iterator[Metric]:
        try:
            with read_engine(self.settings.db_url).connect() as connection:
                metrics = [*self._states(connection), _status_reports(connection)]
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %s", exc)
            return
        yield from metrics

    def _states(self, connection: Any) -> list[Metric]:
        """Builds, jobs and deployments: counted again only when the newest event has changed. Every
        change of their state (and so of a duration) writes an event in its own transaction (see
        store.events), so an unchanged newest event means unchanged numbers: an idle server's
        scrapes cost one lookup of the events' primary key instead of reading every ended row. They
        are counted again after `recount_after` seconds all the same, so a change that wrote no
        event (a row mended by hand) shows within that time."""
        newest = connection.execute(select(func.max(Event.id))).scalar()
        now = time.monotonic()
        with self._lock:
            if self._cached is not None:
                event, counted_at, families = self._cached
                if event == newest and now - counted_at < self.recount_after:
                    return families
        states = [
            _by_status(connection, Build.status, "ciserver_builds", "Builds by status.", Status),
            _by_status(connection, Job.status, "ciserver_jobs", "Jobs by status.", Status),
            _by_status(
                connection,
                Deployment.status,
                "ciserver_deployments",
                "Deployments by status (their outcome once final).",
                DeploymentStatus,
            ),
            _durations(
                connection,
                Build,
                "ciserver_build_duration_seconds",
                "Seconds from a build's start (planning) to its end, of builds that ended.",
            ),
            _durations(
                connection,
                Job,
                "ciserver_job_duration_seconds",
                "Seconds from a job's (last attempt's) start to its end, of jobs that ended.",
            ),
        ]
        with self._lock:
            self._cached = (newest, now, states)
        return states

    def _redis(self) -> Iterator[Metric]:
        try:
            facts = queue.queue_facts(queue.connect(self.settings.redis_url or ""), queue.ALL_QUEUES)
        except (RedisError, ValueError) as exc:
            log.warning("metrics: Redis did not answer: %s", exc)
            return
        depth = GaugeMetricFamily("ciserver_queue_depth", "Tasks waiting on the RQ queue.", labels=["queue"])
        oldest = GaugeMetricFamily(
            "ciserver_queue_oldest_age_seconds",
            "Seconds the oldest waiting task has waited (0: none waits).",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(
            "ciserver_workers",
            "Workers alive (in RQ's registry, with a live heartbeat) per queue.",
            labels=["queue"],
        )
        for fact in facts:
            depth.add_metric([fact.name], fact.waiting)
            oldest.add_metric([fact.name], fact.oldest_wait)
            workers.add_metric([fact.name], fact.workers)
        yield from (depth, oldest, workers)


@lru_cache(maxsize=8)
def read_engine(url: str) -> Engine:
    """The engine scrapes read through. On SQLite a plain one: the store's engine starts every
    transaction with BEGIN IMMEDIATE, and a scrape must not queue for the write lock; WAL (which that
    engine turned on for the file) lets it read while others write."""
    engine = engine_for(url)  # a new database gets its tables; an out-of-date one is refused
    if engine.dialect.name != "sqlite":
        return engine
    return create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})


def _by_status(
    connection: Any, column: InstrumentedAttribute[Any], name: str, documentation: str, states: Iterable[str]
) -> GaugeMetricFamily:
    counts = dict(connection.execute(select(column, func.count()).group_by(column)).all())
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for state in states:  # every state, 0 included, so a query finds the series before the first one
        family.add_metric([str(state)], counts.get(state, 0))
    return family


def _durations(connection: Any, model: type[Build] | type[Job], name: str, documentation: str) -> Metric:
    """Each ended row's seconds computed once (OFFSET 0 keeps the database from inlining the subquery
    into every comparison), its bucket found by one CASE, then rows counted per status and bucket;
    the cumulative counts Prometheus wants are summed up here."""
    started, finished = model.started_at, model.finished_at
    seconds = _seconds_between(started, finished, connection.engine.dialect.name).label("seconds")
    ended = (
        select(model.status.label("status"), seconds)
        .where(started.is_not(None), finished.is_not(None))
        .offset(0)
        .subquery()
    )
    bucket = case(
        *[(ended.c.seconds <= bound, index) for index, bound in enumerate(DURATION_BUCKETS)],
        else_=len(DURATION_BUCKETS),
    ).label("bucket")
    query = select(ended.c.status, bucket, func.count(), func.sum(ended.c.seconds)).group_by(
        ended.c.status, bucket
    )
    counts: dict[str, list[int]] = {}
    sums: dict[str, float] = {}
    for status, index, count, total in connection.execute(query).all():
        per_bucket = counts.setdefault(str(status), [0] * (len(DURATION_BUCKETS) + 1))
        per_bucket[int(index)] += int(count)
        sums[str(status)] = sums.get(str(status), 0.0) + float(total or 0.0)
    family = HistogramMetricFamily(name, documentation, labels=["status"])
    for status, per_bucket in counts.items():
        cumulative = list(accumulate(per_bucket))
        bounds = [*map(floatToGoString, DURATION_BUCKETS), "+Inf"]
        family.add_metric([status], list(zip(bounds, cumulative, strict=True)), sums[status])
    return family


def _status_reports(connection: Any) -> GaugeMetricFamily:
    """The commit statuses outbox: states the forge has yet to be told (still tried, with backoff),
    and those given up on (see ciserver.statuses; the reason is on the build's page)."""
    waiting = (CommitStatus.sent_version < CommitStatus.version) & CommitStatus.gave_up.is_(False)
    query = select(
        func.coalesce(func.sum(case((waiting, 1), else_=0)), 0),
        func.coalesce(func.sum(case((CommitStatus.gave_up.is_(True), 1), else_=0)), 0),
    )
    pending, failed = connection.execute(query).one()
    family = GaugeMetricFamily(
        "ciserver_status_reports",
        "Commit statuses for the forges: pending (not yet reported, still tried) or failed (given up).",
        labels=["state"],
    )
    family.add_metric(["pending"], int(pending))
    family.add_metric(["failed"], int(failed))
    return family


def _seconds_between(start: Any, end: Any, dialect: str) -> ColumnElement[float]:
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return extract("epoch", end - start)
