"""The outbox: builds and jobs the database holds as `queued` but the queue does not, enqueued again.

A webhook commits its build before it enqueues; when Redis is down, or lost its data, the build
waits here instead of being lost. Enqueueing one twice is harmless (the worker's conditional
start lets one run), so every API process may run this loop.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ciserver import queue
from ciserver.config import Settings
from ciserver.store.artifacts import expired_artifacts, forget_artifacts
from ciserver.store.builds import queued_build_ids
from ciserver.store.db import session_scope
from ciserver.store.deployments import lost_deployments
from ciserver.store.dispatch import lost_dispatches
from ciserver.store.models import utcnow

log = logging.getLogger(__name__)

# A build younger than this is still on its way from the webhook to the queue.
GRACE = timedelta(seconds=5)


def enqueue_lost_builds(settings: Settings) -> list[int]:
    """One pass over builds: returns the ids enqueued again."""
    with session_scope(settings.db_url) as session:
        candidates = queued_build_ids(session, created_before=utcnow() - GRACE)
    if not candidates:
        return []
    redis = queue.connect(settings.redis_url or "")
    lost = queue.builds_not_on_queue(redis, candidates)
    for build_id in lost:
        queue.enqueue_build(redis, build_id)
    if lost:
        log.info("outbox: enqueued again builds %s", lost)
    return lost


def enqueue_lost_jobs(settings: Settings) -> list[int]:
    """One pass over dispatched jobs no worker has started: returns the ids enqueued again."""
    with session_scope(settings.db_url) as session:
        candidates = lost_dispatches(session, dispatched_before=utcnow() - GRACE)
    if not candidates:
        return []
    redis = queue.connect(settings.redis_url or "")
    lost = queue.jobs_not_on_queue(redis, candidates)
    queue.enqueue_jobs(redis, lost)
    if lost:
        log.info("outbox: enqueued again jobs %s", [job.job_id for job in lost])
    return [job.job_id for job in lost]


def enqueue_lost_deployments(settings: Settings) -> list[int]:
    """One pass over deployments waiting for a worker: returns the ids enqueued again."""
    with session_scope(settings.db_url) as session:
        candidates = lost_deployments(session, before=utcnow() - GRACE)
    if not candidates:
        return []
    redis = queue.connect(settings.redis_url or "")
    lost = queue.deployments_not_on_queue(redis, candidates)
    queue.enqueue_deployments(redis, lost)
    if lost:
        log.info("outbox: enqueued again deployments %s", lost)
    return lost


def remove_expired_artifacts(settings: Settings) -> int:
    """Delete artifacts past their expire_in, rows and files; returns how many."""
    with session_scope(settings.db_url) as session:
        expired = expired_artifacts(session)
        for artifact in expired:
            (settings.artifacts_dir / artifact.storage_key).unlink(missing_ok=True)
        forget_artifacts(session, [a.id for a in expired])
    return len(expired)


class OutboxThread(threading.Thread):
    """Every `interval` seconds until stopped: lost builds, jobs and deployments enqueued, expired
    artifacts removed."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="ciserver-outbox", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.outbox_interval):
            try:
                enqueue_lost_builds(self.settings)
                enqueue_lost_jobs(self.settings)
                enqueue_lost_deployments(self.settings)
                remove_expired_artifacts(self.settings)
            except (RedisError, SQLAlchemyError) as exc:
                log.debug("outbox: will try again: %s", exc)
            except Exception:
                log.exception("outbox: unexpected error")
