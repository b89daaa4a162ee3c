"""`ciserver worker`: an RQ worker on the builds, jobs and deploys queues.

A SimpleWorker runs each task in the worker process itself: about 7 ms per task instead of the
forking Worker's 18 ms, and the process keeps its database, Redis and Docker connections across
jobs. Jobs are containers, so the isolation a fork would add is already there.

Two things RQ's SimpleWorker does not do, added here with RQ's own parts:
- heartbeats while a task runs (RQ's SimpleWorker sets the task's lease to its whole timeout, hours
  for a deployment): a thread renews the worker's key and the task's entry in the started-job
  registry every third of `worker_ttl`, so a killed worker's task is found abandoned within it;
- a stop that gives the task `stop_grace` seconds, then hands it back to the queue instead of
  leaving it half done.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from types import FrameType

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.worker.base import WorkerStatus

from ciserver import queue
from ciserver.config import Settings
from ciserver.logging_setup import log_context
from workers.context import WorkerContext, current
from workers.reaper import Reaper, ReaperThread

log = logging.getLogger(__name__)


def run_worker(settings: Settings, queues: list[str] | None = None, *, burst: bool = False) -> None:
    connection = Redis.from_url(settings.redis_url or "", socket_connect_timeout=5, health_check_interval=30)
    names = queues or list(queue.ALL_QUEUES)
    ctx = current()
    reaper = ReaperThread(Reaper(ctx), interval=settings.worker_ttl / 2)
    reaper.once()  # what workers lost while none ran
    worker = CiWorker(
        [Queue(name, connection=connection) for name in names],
        connection=connection,
        ctx=ctx,
        grace=settings.stop_grace,
    )
    if not burst:
        reaper.start()
    try:
        # The scheduler moves delayed tasks (removing a previous color after keep_previous) onto the
        # queue; every worker may run it, RQ lets one hold the lock at a time.
        worker.work(burst=burst, with_scheduler=True)
    finally:
        reaper.stopped.set()


class CiWorker(SimpleWorker):
    """RQ's SimpleWorker with heartbeats during a task and a graceful, then handing-back, stop."""

    def __init__(self, queues: list[Queue], *, connection: Redis, ctx: WorkerContext, grace: float) -> None:
        super().__init__(
            queues, connection=connection, name=ctx.worker_name, worker_ttl=ctx.settings.worker_ttl
        )
        self.ctx = ctx
        self.ttl, self.grace = ctx.settings.worker_ttl, grace

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # The task's lease in the started-job registry and the worker's key: renewed by _Heartbeat.
        return self.ttl

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        heartbeat = _Heartbeat(self, job, execution)
        heartbeat.start()
        try:
            # Every line of the task, RQ's "Job OK" too, names the build, job or deployment it runs.
            with log_context(**_task_ids(job)):
                self.perform_job(job, queue, execution)
        finally:
            heartbeat.done.set()
        self.set_state(WorkerStatus.IDLE)

    def unsubscribe(self) -> None:
        """Leave the worker's command channel without waiting on redis-py's listener thread: once
        unsubscribed, it sleeps out RQ's 60 s poll before it sees the stop, and RQ joins it without
        a timeout, which held a stopping worker's exit for up to a minute. It is a daemon thread: it
        ends with the process."""
        if self.pubsub_thread is None or self.pubsub is None:
            return
        log.debug("leaving channel %s", self.pubsub_channel_name)
        self.pubsub_thread.stop(timeout=0.5)
        with contextlib.suppress(RedisError, OSError):
            self.pubsub.unsubscribe()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """First SIGTERM or Ctrl-C: take no new task; the current one has stop_grace seconds."""
        if self.get_state() == WorkerStatus.BUSY:
            log.warning("stopping: the current task has %s s to end before it is handed back", self.grace)
            timer = threading.Timer(self.grace, self.ctx.hand_back.set)
            timer.daemon = True
            timer.start()
        super().request_stop(signum, frame)  # raises StopRequested when idle

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """A second SIGTERM: hand the current task back now rather than kill it where it stands."""
        if self.get_state() != WorkerStatus.BUSY:
            raise SystemExit()
        log.warning("stopping now (%s): handing the current task back", signal.Signals(signum).name)
        self.ctx.hand_back.set()


_TASK_IDS = {queue.BUILD_TASK: "build_id", queue.JOB_TASK: "job_id", queue.DEPLOY_TASK: "deployment_id"}


def _task_ids(job: Job) -> dict[str, int]:
    """The id a task of ours was given, named for the process log (none for other tasks)."""
    key = _TASK_IDS.get(job.func_name)
    args = job.args
    if key is None or not args or not isinstance(args[0], int):
        return {}
    return {key: args[0]}


class _Heartbeat(threading.Thread):
    """Renews the worker's key and the task's lease while the task runs; after Redis lost its data
    (a restart without persistence) it registers the worker again, so no reaper takes it for dead."""

    def __init__(self, worker: CiWorker, job: Job, execution: Execution) -> None:
        super().__init__(name="ciserver-heartbeat", daemon=True)
        self.worker, self.job, self.execution = worker, job, execution
        self.done = threading.Event()

    def run(self) -> None:
        worker, ttl = self.worker, self.worker.ttl
        while not self.done.wait(ttl / 3):
            try:
                if not worker.connection.exists(worker.key):
                    worker.register_birth()
                with worker.connection.pipeline() as pipe:
                    worker.heartbeat(ttl, pipeline=pipe)
                    self.execution.heartbeat(self.job.started_job_registry, ttl, pipeline=pipe)
                    pipe.execute()
            except (RedisError, ValueError) as exc:
                log.debug("heartbeat missed, trying again: %s", exc)
