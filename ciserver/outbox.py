"""The outbox: builds and jobs the database holds as `queued` but the queue does not, enqueued again.

A webhook commits its build before it enqueues; when Redis is down, or lost its data, the build
waits here instead of being lost. Enqueueing one twice is harmless (the worker's conditional
start lets one run), so every API process may run this loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ciserver import queue
from ciserver.config import Settings
from ciserver.storage import artifact_store
from ciserver.store.artifacts import expired_artifacts, forget_artifacts
from ciserver.store.blobs import forget_abandoned_blobs
from ciserver.store.builds import queued_build_ids
from ciserver.store.db import session_scope
from ciserver.store.deployments import lost_deployments
from ciserver.store.dispatch import Dispatched, lost_dispatches
from ciserver.store.events import forget_events_before
from ciserver.store.models import utcnow

log = logging.getLogger(__name__)

# A build younger than this is still on its way from the webhook to the queue.
GRACE = timedelta(seconds=5)
_T = TypeVar("_T")


def enqueue_lost_builds(settings: Settings) -> list[int]:
    """One pass over builds: returns the ids enqueued again."""

    def enqueue(redis: Redis, lost: list[int]) -> None:
        for build_id in lost:
            queue.enqueue_build(redis, build_id)

    def find(session: Session, before: datetime) -> list[int]:
        return queued_build_ids(session, created_before=before)

    return _enqueue_lost(settings, "builds", find, queue.builds_not_on_queue, enqueue)


def enqueue_lost_jobs(settings: Settings) -> list[int]:
    """One pass over dispatched jobs no worker has started: returns the ids enqueued again."""

    def find(session: Session, before: datetime) -> list[Dispatched]:
        return lost_dispatches(session, dispatched_before=before)

    lost = _enqueue_lost(settings, "jobs", find, queue.jobs_not_on_queue, queue.enqueue_jobs)
    return [job.job_id for job in lost]


def enqueue_lost_deployments(settings: Settings) -> list[int]:
    """One pass over deployments waiting for a worker: returns the ids enqueued again."""

    def find(session: Session, before: datetime) -> list[int]:
        return lost_deployments(session, before=before)

    return _enqueue_lost(
        settings, "deployments", find, queue.deployments_not_on_queue, queue.enqueue_deployments
    )


def _enqueue_lost(
    settings: Settings,
    kind: str,
    find: Callable[[Session, datetime], list[_T]],
    not_on_queue: Callable[[Redis, list[_T]], list[_T]],
    enqueue: Callable[[Redis, list[_T]], None],
) -> list[_T]:
    """What the database holds as waiting for the queue (older than GRACE) but the queue does not
    have: enqueued again."""
    with session_scope(settings.db_url) as session:
        candidates = find(session, utcnow() - GRACE)
    if not candidates:
        return []
    redis = queue.connect(settings.redis_url or "")
    lost = not_on_queue(redis, candidates)
    enqueue(redis, lost)
    if lost:
        log.info("outbox: enqueued again %s %s", kind, lost)
    return lost


def remove_expired_artifacts(settings: Settings) -> int:
    """Delete artifacts past their expire_in, bytes then rows (outside any transaction: on SQLite the
    database store's writes would wait for it); returns how many."""
    with session_scope(settings.db_url) as session:
        expired = [(artifact.id, artifact.storage_key) for artifact in expired_artifacts(session)]
    store = artifact_store(settings)
    for _, key in expired:
        store.delete(key)
    with session_scope(settings.db_url) as session:
        forget_artifacts(session, [artifact_id for artifact_id, _ in expired])
    if settings.blob_store == "database":
        forget_abandoned_blobs(settings.db_url)
    return len(expired)


def remove_old_events(settings: Settings) -> int:
    """Delete the events past CISERVER_EVENT_RETENTION; returns how many."""
    with session_scope(settings.db_url) as session:
        return forget_events_before(session, utcnow() - timedelta(seconds=settings.event_retention))


class OutboxThread(threading.Thread):
    """Every `interval` seconds until stopped: lost builds, jobs and deployments enqueued, expired
    artifacts and old events removed."""

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
                remove_old_events(self.settings)
            except (RedisError, SQLAlchemyError) as exc:
                log.debug("outbox: will try again: %s", exc)
            except Exception:
                log.exception("outbox: unexpected error")
