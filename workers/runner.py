"""`ciserver worker`: an RQ worker on the builds, jobs and deploys queues.

A SimpleWorker runs each task in the worker process itself: about 7 ms per task instead of the
forking Worker's 18 ms, and the process keeps its database, Redis and Docker connections across
jobs. Jobs are containers, so the isolation a fork would add is already there.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue, SimpleWorker

from ciserver import queue
from ciserver.config import Settings
from workers.context import current
from workers.reaper import reap_orphans


def run_worker(settings: Settings, queues: list[str] | None = None, *, burst: bool = False) -> None:
    connection = Redis.from_url(settings.redis_url or "")
    names = queues or list(queue.ALL_QUEUES)
    ctx = current()
    reap_orphans(ctx)
    worker = SimpleWorker(
        [Queue(name, connection=connection) for name in names],
        connection=connection,
        name=ctx.worker_name,
    )
    # The scheduler moves delayed tasks (removing a previous color after keep_previous) onto the queue;
    # every worker may run it, RQ lets one hold the lock at a time.
    worker.work(burst=burst, with_scheduler=True)
