"""Jobs and their logs: read from a byte offset, or follow live as Server-Sent Events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import Response
from redis.exceptions import RedisError
from sse_starlette.sse import EventSourceResponse

from ciserver import queue
from ciserver.api.deps import MAX_ROW, DatabaseDep, Developer, RedisDep, RowId, SettingsDep, Viewer, not_found
from ciserver.api.schemas import JobOut
from ciserver.log_follow import follow_log
from ciserver.storage import log_store
from ciserver.store import audit
from ciserver.store.builds import get_job
from ciserver.store.dispatch import advance, play_manual

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut)
def job(job_id: RowId, _: Viewer, db: DatabaseDep, settings: SettingsDep) -> JobOut:
    with db.session() as session:
        found = get_job(session, job_id)
        if found is None:
            raise not_found("job", job_id)
        return JobOut.of(found, settings.registry)


@router.post(
    "/{job_id}/play",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a manual job (when: manual) that waits; the build runs again until it ends",
)
def play(job_id: RowId, caller: Developer, db: DatabaseDep, redis: RedisDep, settings: SettingsDep) -> JobOut:
    with db.session() as session:
        found = get_job(session, job_id)
        if found is None:
            raise not_found("job", job_id)
        if not play_manual(session, found):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"job {job_id} is not a manual job waiting to be started (it is {found.status})",
            )
        dispatched = advance(session, found.build_id, settings.project_concurrency)
        audit.record(session, caller.actor, "job.play", f"job:{job_id}")
        answer = JobOut.of(found, settings.registry)
    try:
        queue.enqueue_jobs(redis, dispatched)
    except RedisError:
        pass  # dispatched in the database: the outbox enqueues it once Redis answers
    return answer


@router.get(
    "/{job_id}/log",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "The log from byte `offset` on."}},
    summary="The job's log from a byte offset; X-Log-Offset is where to continue",
)
def log_text(
    job_id: RowId,
    _: Viewer,
    db: DatabaseDep,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW, description="First byte to return")] = 0,
) -> Response:
    with db.session() as session:
        found = get_job(session, job_id)
        if found is None:
            raise not_found("job", job_id)
        complete = found.status.final
    store = log_store(settings)
    size = store.size(job_id)
    if offset > size:
        raise HTTPException(
            status.HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE,
            f"offset: {offset} is past the end of the log ({size} bytes)",
        )
    data = store.read(job_id, offset)
    headers = {"X-Log-Offset": str(offset + len(data)), "X-Log-Complete": "true" if complete else "false"}
    return Response(data, media_type="text/plain; charset=utf-8", headers=headers)


@router.get(
    "/{job_id}/log/stream",
    summary="Follow the job's log as Server-Sent Events until it ends",
    description=(
        'Events `log` carry `{"offset": N, "text": ...}` with the byte offset after them as the event id; '
        'a final `end` event carries `{"status": ...}`. Reconnect with `Last-Event-ID` to miss nothing.'
    ),
)
async def log_stream(
    job_id: RowId,
    request: Request,
    _: Viewer,
    db: DatabaseDep,
    settings: SettingsDep,
    redis: RedisDep,
    last_event_id: Annotated[str | None, Header()] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW)] = 0,
) -> EventSourceResponse:
    with db.session() as session:
        if get_job(session, job_id) is None:
            raise not_found("job", job_id)
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else offset
    events = follow_log(
        job_id,
        start,
        store=log_store(settings),
        redis_url=settings.redis_url or "",
        db_url=settings.db_url,
        disconnected=request.is_disconnected,
    )
    return EventSourceResponse(events, ping=15)
