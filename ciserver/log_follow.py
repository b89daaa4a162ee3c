"""Following a job's log for an SSE client: the log store for what is written, the live stream
for what comes, and the store alone when Redis has no stream (expired, restarted, unreachable).

Positions are byte offsets, used as SSE event ids, so a client reconnecting with Last-Event-ID
gets exactly the bytes after the last ones it saw.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sse_starlette.sse import ServerSentEvent

from ciserver.logs import LogStore, stream_key
from ciserver.states import Status
from ciserver.store.db import session_scope
from ciserver.store.models import Job

BLOCK_MS = 5000
POLL_SECONDS = 0.5


def _event(offset: int, data: bytes) -> ServerSentEvent:
    text = data.decode("utf-8", errors="replace")
    return ServerSentEvent(
        data=json.dumps({"offset": offset, "text": text}), event="log", id=str(offset + len(data))
    )


def _job_status(db_url: str, job_id: int) -> Status | None:
    with session_scope(db_url) as session:
        job = session.get(Job, job_id)
        return job.status if job else None


async def follow_log(
    job_id: int,
    start: int,
    *,
    store: LogStore,
    redis_url: str,
    db_url: str,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[ServerSentEvent]:
    sent = start
    redis = Redis.from_url(redis_url, socket_connect_timeout=2) if redis_url else None
    last_id = "0-0"

    async def from_store(until: int | None = None) -> AsyncIterator[ServerSentEvent]:
        nonlocal sent
        limit = None if until is None else max(0, until - sent)
        data = await asyncio.to_thread(store.read, job_id, sent, limit)
        if data:
            yield _event(sent, data)
            sent += len(data)

    try:
        while not await disconnected():
            status = await asyncio.to_thread(_job_status, db_url, job_id)
            if status is None or status.final:
                async for event in from_store():
                    yield event
                yield ServerSentEvent(data=json.dumps({"status": status}), event="end")
                return
            entries = None
            if redis is not None:
                try:
                    entries = await redis.xread({stream_key(job_id): last_id}, block=BLOCK_MS, count=500)
                except RedisError:
                    entries = None
            if not entries:
                async for event in from_store():
                    yield event
                if redis is None or entries is None:
                    await asyncio.sleep(POLL_SECONDS)
                continue
            for _key, items in entries:
                for entry_id, fields in items:
                    last_id = entry_id
                    if b"end" in fields:
                        async for event in from_store():
                            yield event
                        yield ServerSentEvent(
                            data=json.dumps({"status": fields[b"end"].decode()}), event="end"
                        )
                        return
                    offset, data = int(fields[b"o"]), fields[b"d"]
                    if offset > sent:  # the stream lost its start (trimmed, or Redis restarted)
                        async for event in from_store(until=offset):
                            yield event
                    if offset + len(data) > sent >= offset:
                        chunk = data[sent - offset :]
                        yield _event(sent, chunk)
                        sent += len(chunk)
    finally:
        if redis is not None:
            await redis.aclose()
