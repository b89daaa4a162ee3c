"""Events: a row for every build, job and deployment that is created or changes state.

Each is added in the transaction that makes the change, so an event exists exactly when its change
was committed: a client that resumes from the last event id it saw (SSE's Last-Event-ID) misses
nothing and sees nothing that was rolled back. The rows are read in `id` order; that order is the
order of the commits closely enough for a display (two concurrent transactions may commit in the
other order of their ids, which is why a reader re-reads a short window, see `events_after`).
"""

from __future__ import annotations

from datetime import datetime
from itertools import takewhile
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ciserver.store.models import Build, Deployment, Event, Job, Project

# session.info key: the newest event this transaction added, for the wake-up published after its
# commit (ciserver.event_bus).
ADDED = "ciserver.events_added"
_Row = TypeVar("_Row", Build, Job, Deployment)


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def record_build(session: Session, build: Build | int) -> Event | None:
    """The build's state now, as an event (None if there is no such build). Given an id, the row is
    read again (a bulk UPDATE changed it); given the object, it is taken as it stands."""
    build = _current(session, Build, build)
    if build is None:
        return None
    data: dict[str, Any] = {
        "id": build.id,
        "project": build.project.name,
        "status": build.status.value,
        "ref": build.ref,
        "branch": build.branch,
        "tag": build.tag,
        "sha": build.sha,
        "error": build.error,
        "created_at": _when(build.created_at),
        "started_at": _when(build.started_at),
        "finished_at": _when(build.finished_at),
    }
    return _add(session, build.project_id, "build", build.id, build.status.value, data)


def record_job(session: Session, job: Job | int) -> Event | None:
    """The job's state now, as an event (None if there is no such job); an id or the object, as
    for record_build."""
    job = _current(session, Job, job)
    if job is None:
        return None
    build = job.build
    data: dict[str, Any] = {
        "id": job.id,
        "build_id": job.build_id,
        "project": build.project.name,
        "name": job.name,
        "stage": job.stage,
        "status": job.status.value,
        "attempt": job.attempt,
        "exit_code": job.exit_code,
        "error": job.error,
        "started_at": _when(job.started_at),
        "finished_at": _when(job.finished_at),
    }
    return _add(session, build.project_id, "job", job.id, job.status.value, data)


def record_deployment(session: Session, deployment: Deployment | int) -> Event | None:
    """The deployment's state now, as an event (None if there is no such deployment); an id or the
    object, as for record_build."""
    deployment = _current(session, Deployment, deployment)
    if deployment is None:
        return None
    data: dict[str, Any] = {
        "id": deployment.id,
        "project": deployment.project.name,
        "environment": deployment.environment.name,
        "build_id": deployment.release.build_id,
        "action": deployment.action.value,
        "strategy": deployment.strategy,
        "status": deployment.status.value,
        "weight": deployment.weight,
        "step": deployment.step,
        "reason": deployment.reason,
    }
    return _add(session, deployment.project_id, "deployment", deployment.id, deployment.status.value, data)


def _current(session: Session, model: type[_Row], row: _Row | int) -> _Row | None:
    if not isinstance(row, int):
        return row
    session.flush()  # pending changes of the session first, so the read sees them
    return session.get(model, row, populate_existing=True)


def _add(
    session: Session, project_id: int, kind: str, subject_id: int, status: str, data: dict[str, Any]
) -> Event:
    event = Event(project_id=project_id, kind=kind, subject_id=subject_id, status=status, data=data)
    session.add(event)
    session.flush()
    session.info[ADDED] = max(event.id, session.info.get(ADDED, 0))
    return event


def events_after(
    session: Session,
    after: int,
    *,
    project: str | None = None,
    project_id: int | None = None,
    limit: int = 500,
) -> list[Event]:
    """Events with an id above `after`, oldest first, of one project (by name or id) or all."""
    query = select(Event).where(Event.id > after).order_by(Event.id).limit(limit)
    if project_id is not None:
        query = query.where(Event.project_id == project_id)
    if project is not None:
        query = query.join(Project, Project.id == Event.project_id).where(Project.name == project)
    return list(session.scalars(query))


def describe(event: Event) -> dict[str, Any]:
    """The event as a stream's `data` carries it: kind, event id and time, then the subject's fields."""
    return {"kind": event.kind, "event_id": event.id, "at": _when(event.at), **event.data}


def last_event_id(session: Session) -> int:
    """The newest event's id, 0 when there is none: where a client that wants only new events starts."""
    return session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0


def forget_events_before(session: Session, before: datetime, *, chunk: int = 1000) -> int:
    """Drop events older than `before`, oldest first (a resume that far back starts from what is
    left). Walks the primary key from the oldest row and stops at the first younger one, so a pass
    with nothing to drop reads one row, not the table (`at` has no index)."""
    dropped, size = 0, 1
    while True:
        rows = session.execute(select(Event.id, Event.at).order_by(Event.id).limit(size)).all()
        old = [event_id for event_id, _ in takewhile(lambda row: row[1] < before, rows)]
        if old:
            dropped += session.execute(delete(Event).where(Event.id.in_(old))).rowcount
        if len(old) < size:
            return dropped
        size = chunk
