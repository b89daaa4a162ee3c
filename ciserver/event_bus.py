"""Waking the event streams: a Redis message published after every commit that added events.

The events table is the truth (a stream resumes from it and misses nothing); the message only says
"read it now", so a stream shows a change within milliseconds of its commit instead of at its next
poll. A lost message (Redis down, a process that did not install the publisher) costs a stream its
fallback poll, never an event.

Processes that write and have Redis call `install_publisher` once; the API holds one subscription
(`EventHub`) for all its streams.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from redis import Redis
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from ciserver.store.events import ADDED

log = logging.getLogger(__name__)

CHANNEL = "ciserver:events"

_lock = threading.Lock()
_publisher: _Publisher | None = None


class _Publisher:
    def __init__(self, redis_url: str) -> None:
        self.url = redis_url
        self.redis = Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)

    def after_commit(self, session: Session) -> None:
        newest = session.info.pop(ADDED, None)
        if newest is None:
            return
        try:
            self.redis.publish(CHANNEL, str(newest))
        except RedisError as exc:  # the streams' fallback poll shows it a little later
            log.debug("events: wake-up not published: %s", exc)


def _after_rollback(session: Session, transaction: SessionTransaction) -> None:
    if not transaction.nested:  # a savepoint's rollback leaves the events around it
        session.info.pop(ADDED, None)


def install_publisher(redis_url: str | None) -> None:
    """Publish a wake-up after each commit, in this process, that added events (once per process;
    a later call with another URL moves the publisher there)."""
    global _publisher
    if not redis_url:
        return
    with _lock:
        if _publisher is not None:
            if _publisher.url == redis_url:
                return
            event.remove(Session, "after_commit", _publisher.after_commit)
        else:
            event.listen(Session, "after_soft_rollback", _after_rollback)
        _publisher = _Publisher(redis_url)
        event.listen(Session, "after_commit", _publisher.after_commit)


class EventHub:
    """One subscription to the wake-ups per API process, fanned out to every stream it serves.

    Each stream joins with an asyncio.Event that the hub sets on every wake-up; the stream clears
    it before it reads, so a wake-up during a read is not lost. The subscription lives while at
    least one stream is joined.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.loop = asyncio.get_running_loop()
        self._streams: set[asyncio.Event] = set()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def join(self) -> asyncio.Event:
        """A wake-up flag for one stream, once the hub listens (or after a second, when Redis does
        not answer: the stream polls meanwhile)."""
        wake = asyncio.Event()
        self._streams.add(wake)
        if self._task is None or self._task.done():
            self._subscribed = asyncio.Event()
            self._task = asyncio.create_task(self._listen(), name="ciserver-event-hub")
            try:  # the first stream waits for the subscription; later ones find it made
                await asyncio.wait_for(self._subscribed.wait(), 1.0)
            except TimeoutError:
                pass
        return wake

    def leave(self, wake: asyncio.Event) -> None:
        self._streams.discard(wake)
        if not self._streams and self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def streams(self) -> int:
        return len(self._streams)

    def _wake(self) -> None:
        for wake in self._streams:
            wake.set()

    async def _listen(self) -> None:
        while True:
            redis = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._subscribed.set()
                    self._wake()  # whatever was committed while it was not listening
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._wake()
            except (RedisError, OSError) as exc:
                log.debug("events: subscription lost, again in 1 s: %s", exc)
                await asyncio.sleep(1)
            finally:
                await redis.aclose()
