"""Containers left by a worker that died (SIGKILL, a crash, a lost host): found by their labels,
removed, and their jobs ended as `error` so their builds can finish."""

from __future__ import annotations

import logging

from rq import Worker

from ciserver import queue
from ciserver.store.db import session_scope
from ciserver.store.dispatch import Dispatched, advance
from ciserver.store.models import Job, Status
from ciserver.store.transitions import end_job
from workers.context import WorkerContext

log = logging.getLogger(__name__)


def reap_orphans(ctx: WorkerContext) -> list[int]:
    """Remove this data dir's job containers whose worker is not alive; returns their job ids."""
    live = {worker.name for worker in Worker.all(connection=ctx.redis)}
    removed = ctx.executor.remove_leftovers(
        {"ciserver.data_dir": str(ctx.settings.data_dir)},
        keep=lambda labels: labels.get("ciserver.worker") in live,
    )
    job_ids = [int(labels["ciserver.job"]) for labels in removed if labels.get("ciserver.job", "").isdigit()]
    dispatched: list[Dispatched] = []
    with session_scope(ctx.settings.db_url) as session:
        for job_id in job_ids:
            job = session.get(Job, job_id)
            if job is not None and end_job(
                session, job_id, Status.error, error="the worker running it was lost"
            ):
                dispatched += advance(session, job.build_id, ctx.settings.project_concurrency)
    queue.enqueue_jobs(ctx.redis, dispatched)
    if job_ids:
        log.warning("removed containers of jobs %s left by workers that are gone", job_ids)
    return job_ids
