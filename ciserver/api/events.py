"""GET /api/v1/events: builds, jobs and deployments as they are created and change state (SSE).

Every frame is a row of the events table, written in the transaction of its change, with the row's
id as the SSE id: a client that reconnects with Last-Event-ID (browsers do by themselves) gets
exactly what it missed. A Redis wake-up published after each commit (ciserver.event_bus) makes a
change reach a connected client within milliseconds; a slow poll covers a lost wake-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, HTTPException, Query, Request, status
from sqlalchemy.exc import SQLAlchemyError
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

from ciserver.api.deps import MAX_ROW, DatabaseDep, SettingsDep, Viewer, project_or_404
from ciserver.config import Settings
from ciserver.event_bus import EventHub
from ciserver.event_feed import BATCH, EventCursor, new_cursor, read_new

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/events", tags=["events"])

# Seconds between reads when no wake-up comes (Redis lost one, or is not there).
FALLBACK_POLL = 1.5
KEEP_ALIVE = 15

DESCRIPTION = """\
Server-Sent Events, one frame per change:

```
id: 42
event: build
data: {"kind": "build", "event_id": 42, "at": "...", "id": 7, "project": "acme/app", "status": "running", ...}
```

`event` is `build`, `job` or `deployment`; `data` holds the subject's fields as they stand after the
change (a build: id, project, status, ref, branch, tag, sha, error, created_at, started_at,
finished_at; a job: id, build_id, project, name, stage, status, attempt, exit_code, error,
started_at, finished_at; a deployment: id, project, environment, build_id, action, strategy, status,
weight, step, reason). Resume with the `Last-Event-ID` header or `?after=N`; without either, only
events from now on. A `: keep-alive` comment comes every 15 s.
"""


@router.get(
    "",
    summary="Builds, jobs and deployments as they change (Server-Sent Events)",
    description=DESCRIPTION,
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The stream, until the client leaves"}
    },
)
def events(
    request: Request,
    _: Viewer,
    db: DatabaseDep,
    settings: SettingsDep,
    project: Annotated[str | None, Query(description="OWNER/NAME: only this project's events")] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ROW, description="Start after this event id (as Last-Event-ID)")
    ] = None,
    last_event_id: Annotated[
        str | None, Header(description="The id of the last event seen; wins over `after`")
    ] = None,
) -> EventSourceResponse:
    start = _resume_point(last_event_id) if last_event_id else after
    project_id = None
    if project is not None:
        with db.session() as session:
            project_id = project_or_404(session, project).id
    cursor = new_cursor(settings.db_url, start)
    return EventSourceResponse(
        _frames(request.app, settings, cursor, project_id),
        ping=KEEP_ALIVE,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _resume_point(header: str) -> int:
    value = header.strip()
    if not value.isdecimal() or int(value) > MAX_ROW:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"Last-Event-ID: {header[:40]!r} is not an event id (a whole number of at least 0)",
        )
    return int(value)


async def _frames(
    app: FastAPI, settings: Settings, cursor: EventCursor, project_id: int | None
) -> AsyncIterator[ServerSentEvent]:
    hub = _hub(app, settings.redis_url)
    wake = await hub.join() if hub is not None else asyncio.Event()
    try:
        while True:
            wake.clear()  # before the read: a wake-up during it makes the next wait end at once
            try:
                frames = await asyncio.to_thread(read_new, settings.db_url, cursor, project_id)
            except SQLAlchemyError as exc:  # the database is busy or away: read again at the next turn
                log.warning("events: could not read the events table: %s", exc)
                frames = []
            for frame in frames:
                yield ServerSentEvent(data=json.dumps(frame), event=frame["kind"], id=str(frame["event_id"]))
            if len(frames) >= BATCH:
                continue
            try:
                await asyncio.wait_for(wake.wait(), FALLBACK_POLL)
            except TimeoutError:
                pass
    finally:
        if hub is not None:
            hub.leave(wake)


def _hub(app: FastAPI, redis_url: str | None) -> EventHub | None:
    """The process's hub, made by its first stream; none without Redis (the streams poll)."""
    if not redis_url:
        return None
    hub: EventHub | None = getattr(app.state, "event_hub", None)
    if hub is None or hub.loop is not asyncio.get_running_loop():
        hub = app.state.event_hub = EventHub(redis_url)
    return hub
