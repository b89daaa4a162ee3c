"""What /metrics reports, against a store with known builds, jobs and deployments (SQLite and
PostgreSQL) and a real Redis with known queues and workers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy.orm import Session

from ciserver.config import Settings
from ciserver.metrics import StateCollector, metrics_registry
from ciserver.queue import queue_facts
from ciserver.states import DeployAction, DeploymentStatus, Status
from ciserver.store.db import session_scope
from ciserver.store.models import Build, CommitStatus, Deployment, Environment, Event, Job, Project, Release

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _project(session: Session) -> Project:
    project = Project(name="octo/app", forge="github", repo_url="https://x.test/a.git", secret="s")
    session.add(project)
    session.flush()
    return project


def _build(session: Session, project: Project, status: Status, seconds: float | None) -> Build:
    """A build that ran `seconds` (None: never started), with one job of the same status and time."""
    ended = None if seconds is None else T0 + timedelta(seconds=seconds)
    started = None if seconds is None else T0
    build = Build(
        project_id=project.id, ref="refs/heads/main", branch="main", sha="a" * 40, status=status,
        started_at=started, finished_at=ended,
    )  # fmt: skip
    session.add(build)
    session.flush()
    session.add(
        Job(
            build_id=build.id, position=0, name="unit", stage="test", image="busybox", script=[],
            env={}, timeout=60, after=[], status=status, started_at=started, finished_at=ended,
        )
    )  # fmt: skip
    return build


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Settings:
    """Two green builds (0.7 s and 40 s), a failed one (3 s), one queued, two deployments, and three
    commit statuses: one waiting to be sent, one sent, one given up."""
    with session_scope(database_url) as session:
        project = _project(session)
        green = _build(session, project, Status.success, 0.7)
        _build(session, project, Status.success, 40)
        _build(session, project, Status.failed, 3)
        _build(session, project, Status.queued, None)
        release = Release(project_id=project.id, build_id=green.id, sha=green.sha, config={})
        environment = Environment(project_id=project.id, name="staging")
        session.add_all([release, environment])
        session.flush()
        for status in (DeploymentStatus.succeeded, DeploymentStatus.rolled_back):
            session.add(
                Deployment(
                    project_id=project.id, environment_id=environment.id, release_id=release.id,
                    action=DeployAction.auto, strategy="canary", status=status, triggered_by="test",
                )
            )  # fmt: skip
        session.add_all(
            [
                CommitStatus(build_id=green.id, context="ci/a", state="success", version=2, sent_version=1),
                CommitStatus(build_id=green.id, context="ci/b", state="success", version=2, sent_version=2),
                CommitStatus(build_id=green.id, context="ci/c", state="failure", gave_up=True, error="401"),
            ]
        )
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


def _registry(settings: Settings) -> CollectorRegistry:
    registry, _ = metrics_registry(settings)
    return registry


def test_builds_jobs_and_deployments_are_counted_by_status_from_the_database(store: Settings) -> None:
    registry = _registry(store)
    value = registry.get_sample_value
    assert value("ciserver_builds", {"status": "success"}) == 2
    assert value("ciserver_builds", {"status": "failed"}) == 1
    assert value("ciserver_builds", {"status": "queued"}) == 1
    assert value("ciserver_builds", {"status": "canceled"}) == 0  # every state has its series
    assert value("ciserver_jobs", {"status": "success"}) == 2
    assert value("ciserver_deployments", {"status": "succeeded"}) == 1
    assert value("ciserver_deployments", {"status": "rolled_back"}) == 1
    assert value("ciserver_deployments", {"status": "pending"}) == 0
    assert value("ciserver_metrics_source_up", {"source": "database"}) == 1


def test_durations_are_histograms_bucketed_from_the_rows_that_ended(store: Settings) -> None:
    value = _registry(store).get_sample_value
    for name in ("ciserver_build_duration_seconds", "ciserver_job_duration_seconds"):
        green = {"status": "success"}
        assert value(f"{name}_count", green) == 2  # the queued build has no duration
        assert value(f"{name}_sum", green) == pytest.approx(40.7, abs=0.01)
        assert value(f"{name}_bucket", {**green, "le": "0.5"}) == 0
        assert value(f"{name}_bucket", {**green, "le": "1.0"}) == 1
        assert value(f"{name}_bucket", {**green, "le": "30.0"}) == 1
        assert value(f"{name}_bucket", {**green, "le": "60.0"}) == 2
        assert value(f"{name}_bucket", {**green, "le": "+Inf"}) == 2
        assert value(f"{name}_bucket", {"status": "failed", "le": "5.0"}) == 1
        assert value(f"{name}_bucket", {"status": "failed", "le": "2.0"}) == 0


def test_commit_statuses_are_counted_pending_until_sent_and_failed_once_given_up(store: Settings) -> None:
    value = _registry(store).get_sample_value
    assert value("ciserver_status_reports", {"state": "pending"}) == 1
    assert value("ciserver_status_reports", {"state": "failed"}) == 1


def test_a_new_collector_reads_the_same_numbers_as_after_a_restart(store: Settings) -> None:
    first, second = _registry(store), _registry(store)
    assert first.get_sample_value("ciserver_builds", {"status": "success"}) == 2
    assert second.get_sample_value("ciserver_builds", {"status": "success"}) == 2


def _green_builds(collector: StateCollector) -> float:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry.get_sample_value("ciserver_builds", {"status": "success"}) or 0


def test_an_idle_server_is_counted_again_once_an_event_says_something_changed(store: Settings) -> None:
    collector = StateCollector(store)
    assert _green_builds(collector) == 2
    with session_scope(store.db_url) as session:
        project = session.query(Project).one()
        build = _build(session, project, Status.success, 5)
    assert _green_builds(collector) == 2, "no event yet: the counts of the last scrape"
    with session_scope(store.db_url) as session:
        session.add(Event(project_id=project.id, kind="build", subject_id=build.id, status="success"))
    assert _green_builds(collector) == 3
    with session_scope(store.db_url) as session:
        _build(session, project, Status.success, 5)  # a row mended by hand, without an event
    collector.recount_after = 0
    assert _green_builds(collector) == 4, "counted again once recount_after has passed"


def test_an_unreachable_redis_is_reported_as_a_source_down_not_a_failed_scrape(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", redis_url="redis://127.0.0.1:1/0")
    value = _registry(settings).get_sample_value
    assert value("ciserver_metrics_source_up", {"source": "redis"}) == 0
    assert value("ciserver_metrics_source_up", {"source": "database"}) == 1
    assert value("ciserver_builds", {"status": "success"}) == 0


def test_queues_report_their_depth_oldest_wait_and_workers_alive(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    waiting, empty = f"metrics-{uuid.uuid4().hex[:8]}", f"metrics-{uuid.uuid4().hex[:8]}"
    queue = Queue(waiting, connection=redis)
    first = queue.enqueue("workers.tasks.run_build", 1)
    queue.enqueue("workers.tasks.run_build", 2)
    alive = SimpleWorker([queue], connection=redis, name=f"alive-{uuid.uuid4().hex[:8]}")
    lost = SimpleWorker([queue], connection=redis, name=f"lost-{uuid.uuid4().hex[:8]}")
    try:
        alive.register_birth()
        lost.register_birth()
        redis.delete(lost.key)  # killed outright: still in RQ's set, its heartbeat key expired
        assert first.enqueued_at is not None
        now = first.enqueued_at.replace(tzinfo=UTC) + timedelta(seconds=30)
        busy, idle = queue_facts(redis, [waiting, empty], now=now)
        assert (busy.name, busy.waiting, busy.workers) == (waiting, 2, 1)
        assert busy.oldest_wait == pytest.approx(30, abs=0.01)
        assert (idle.name, idle.waiting, idle.oldest_wait, idle.workers) == (empty, 0, 0, 0)
    finally:
        alive.register_death()
        lost.register_death()
        queue.delete(delete_jobs=True)
