"""The outbox: builds the database holds as `queued` but the queue does not, enqueued again.

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
from ciserver.store.builds import queued_build_ids
from ciserver.store.db import session_scope
from ciserver.store.models import utcnow

log = logging.getLogger(__name__)

# A build younger than this is still on its way from the webhook to the queue.
GRACE = timedelta(seconds=5)


def enqueue_lost_builds(settings: Settings) -> list[int]:
    """One pass: returns the ids enqueued again."""
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


class OutboxThread(threading.Thread):
    """Runs `enqueue_lost_builds` every `interval` seconds until stopped."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="ciserver-outbox", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.outbox_interval):
            try:
                enqueue_lost_builds(self.settings)
            except (RedisError, SQLAlchemyError) as exc:
                log.debug("outbox: will try again: %s", exc)
            except Exception:
                log.exception("outbox: unexpected error")
