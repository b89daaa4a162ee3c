"""Builds: list, show (with jobs), cancel, retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from redis.exceptions import RedisError

from ciserver import queue
from ciserver.api.deps import MAX_ROW, DatabaseDep, Developer, RedisDep, RowId, SettingsDep, Viewer, not_found
from ciserver.api.schemas import BuildCreated, BuildDetail, BuildList, BuildOut
from ciserver.states import Status
from ciserver.store import audit
from ciserver.store.builds import cancel_build, get_build, list_builds, retry_build

router = APIRouter(prefix="/api/v1/builds", tags=["builds"])


@router.get("", response_model=BuildList, summary="Builds, newest first")
def builds(
    _: Viewer,
    db: DatabaseDep,
    project: Annotated[str | None, Query(description="OWNER/NAME")] = None,
    branch: str | None = None,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW)] = 0,
) -> BuildList:
    with db.session() as session:
        items, total = list_builds(
            session,
            project=project,
            branch=branch,
            status=status_,
            limit=limit,
            offset=offset,
        )
        return BuildList(items=[BuildOut.of(b) for b in items], total=total)


@router.get("/{build_id}", response_model=BuildDetail, summary="A build with its jobs")
def build(build_id: RowId, _: Viewer, db: DatabaseDep, settings: SettingsDep) -> BuildDetail:
    with db.session() as session:
        found = get_build(session, build_id)
        if found is None:
            raise not_found("build", build_id)
        return BuildDetail.of(found, settings.registry)


@router.post(
    "/{build_id}/cancel",
    response_model=BuildDetail,
    summary="Stop a build: running jobs end, queued never start",
)
def cancel(
    build_id: RowId, caller: Developer, db: DatabaseDep, redis: RedisDep, settings: SettingsDep
) -> BuildDetail:
    with db.session() as session:
        found = get_build(session, build_id)
        if found is None:
            raise not_found("build", build_id)
        running = cancel_build(session, build_id)
        if running is None:
            raise HTTPException(status.HTTP_409_CONFLICT, f"build {build_id} already ended {found.status}")
        audit.record(session, caller.actor, "build.cancel", f"build:{build_id}")
    try:
        queue.request_cancel(redis, running)
    except RedisError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"build {build_id} is canceled, but its running jobs could not be told to stop: {exc}",
        ) from None
    with db.session() as session:
        return BuildDetail.of(get_build(session, build_id), settings.registry)  # type: ignore[arg-type]


@router.post(
    "/{build_id}/retry",
    response_model=BuildCreated,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Build the same commit again, as a new build",
)
def retry(build_id: RowId, caller: Developer, db: DatabaseDep, redis: RedisDep) -> BuildCreated:
    with db.session() as session:
        found = get_build(session, build_id)
        if found is None:
            raise not_found("build", build_id)
        new = retry_build(session, found)
        audit.record(session, caller.actor, "build.retry", f"build:{build_id}", {"new_build": new.id})
        new_id = new.id
    try:
        queue.enqueue_build(redis, new_id)
    except RedisError:
        pass  # recorded: the outbox enqueues it once Redis answers
    return BuildCreated(build_id=new_id)
