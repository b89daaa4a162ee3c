"""The work of workers that are gone (SIGKILL, a crash, a lost host), found with RQ's own records
and handed on: every worker runs this at start and then every half `worker_ttl`.

A worker is alive while RQ lists it: its key lives `worker_ttl` past its last heartbeat (see
workers.runner). For the tasks of one that is not:
- RQ's started-job registry is cleaned, so RQ itself marks the abandoned tasks failed;
- a running job is retried if its retry policy says so (a lost worker is a runner_failure), else
  ended `error`, and its build goes on;
- a build whose planning was lost is queued again (planning commits its jobs at once, so there is
  nothing half done), and the outbox enqueues it;
- a deployment is handed back, so the outbox gives it to another worker, which resumes its step;
- the containers and networks labelled with a dead worker's jobs are removed from this engine.

Nobody is judged dead until Redis has been up, and reachable from here, for a whole `worker_ttl`:
after a Redis restart that lost the worker registry, live workers register again with their next
heartbeat, and must not be taken for dead before they had the chance.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import timedelta

from redis.exceptions import RedisError
from rq import Worker
from rq.registry import StartedJobRegistry
from sqlalchemy.exc import SQLAlchemyError

from ciserver import queue
from ciserver.logs import LogStoreError, LogWriter
from ciserver.states import Status
from ciserver.store.builds import requeue_builds, unplanned_running_build_ids
from ciserver.store.db import session_scope
from ciserver.store.deployments import hand_back_deployments_of
from ciserver.store.dispatch import Dispatched, jobs_of_lost_workers
from ciserver.store.job_end import end_lost_job
from ciserver.store.models import utcnow
from workers.context import WorkerContext
from workers.executors.base import ExecutorError
from workers.executors.docker_service import DEPLOY_LABEL

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx, self.settings = ctx, ctx.settings
        self.ttl = ctx.settings.worker_ttl
        self._last_redis_failure = float("-inf")

    def alive_workers(self) -> set[str] | None:
        """Names of the workers RQ lists, or None while that list cannot be trusted yet."""
        try:
            redis = self.ctx.redis
            uptime = int(redis.info("server")["uptime_in_seconds"])
            alive = {worker.name for worker in Worker.all(connection=redis)}
        except RedisError:
            self._last_redis_failure = time.monotonic()
            raise
        if uptime < self.ttl or time.monotonic() - self._last_redis_failure < self.ttl:
            return None
        return alive

    def run_once(self) -> None:
        alive = self.alive_workers()
        if alive is None:
            return
        for name in queue.ALL_QUEUES:
            StartedJobRegistry(name, connection=self.ctx.redis).cleanup()
        # The containers first: a retry of the job may start on another worker at once, under the same name.
        try:
            self.remove_containers(alive)
        except ExecutorError as exc:
            log.warning("reaper: containers of lost workers not removed this time: %s", exc)
        self.hand_on_jobs(alive)
        self.hand_on_builds_and_deployments(alive)

    def hand_on_jobs(self, alive: set[str]) -> list[int]:
        """Retry or end the running jobs of workers that are gone; returns their ids."""
        concurrency = self.settings.project_concurrency
        with session_scope(self.settings.db_url) as session:
            lost = jobs_of_lost_workers(session, alive)
        dispatched: list[Dispatched] = []
        deployments: list[int] = []
        for job_id, worker in lost:
            reason = f"the worker running it ({worker}) was lost"
            with session_scope(self.settings.db_url) as session:
                ended = end_lost_job(session, job_id, reason, concurrency)
            if ended is None:
                continue
            dispatched += ended.dispatched
            deployments += ended.deployments
            if ended.status is not None:
                self._note_in_log(job_id, reason, ended.status)
        queue.enqueue_jobs(self.ctx.redis, dispatched)
        queue.enqueue_deployments(self.ctx.redis, deployments)
        if lost:
            log.warning("jobs %s: their workers are gone; retried or ended", [job for job, _ in lost])
        return [job for job, _ in lost]

    def hand_on_builds_and_deployments(self, alive: set[str]) -> None:
        started_before = utcnow() - timedelta(seconds=self.ttl)
        with session_scope(self.settings.db_url) as session:
            unplanned = unplanned_running_build_ids(session, started_before=started_before)
        lost_builds = queue.builds_not_on_queue(self.ctx.redis, unplanned) if unplanned else []
        with session_scope(self.settings.db_url) as session:
            requeued = requeue_builds(session, lost_builds)
            handed_back = hand_back_deployments_of(session, alive)
        if requeued or handed_back:
            log.warning(
                "lost with their workers: builds %s queued again, deployments %s handed back",
                requeued,
                handed_back,
            )

    def remove_containers(self, alive: set[str]) -> list[int]:
        """Remove this data dir's job containers whose worker is not alive; returns their job ids."""
        removed = self.ctx.executor.remove_leftovers(
            {"ciserver.data_dir": str(self.settings.data_dir)},
            # A deployed service is never a job's leftover, whatever labels its image carries.
            keep=lambda labels: bool(labels.get(DEPLOY_LABEL)) or labels.get("ciserver.worker") in alive,
        )
        job_ids = [
            int(labels["ciserver.job"]) for labels in removed if labels.get("ciserver.job", "").isdigit()
        ]
        if job_ids:
            log.warning("removed containers of jobs %s left by workers that are gone", job_ids)
        return job_ids

    def _note_in_log(self, job_id: int, reason: str, status: Status) -> None:
        """The reason in the job's log, and the end of its live stream unless a retry follows."""
        writer = LogWriter(self.ctx.log_store, self.ctx.redis, job_id, self.settings.log_stream_ttl)
        retrying = status == Status.queued
        with contextlib.suppress(LogStoreError, RedisError):
            writer.line(f"ciserver: {reason}" + ("; retrying, as its retry policy says" if retrying else ""))
            writer.flush()
        if not retrying:
            writer.close(status)


class ReaperThread(threading.Thread):
    """Runs the reaper every `interval` seconds until stopped; an outage is retried next time."""

    def __init__(self, reaper: Reaper, interval: float) -> None:
        super().__init__(name="ciserver-reaper", daemon=True)
        self.reaper, self.interval = reaper, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.once()

    def once(self) -> None:
        try:
            self.reaper.run_once()
        except (RedisError, SQLAlchemyError, ExecutorError) as exc:
            log.info("reaper: will try again: %s", exc)
        except Exception:
            log.exception("reaper: unexpected error")
