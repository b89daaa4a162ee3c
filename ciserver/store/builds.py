"""Builds as the API sees them: recording a push once, listing, cancelling, retrying."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from ciserver.states import Status
from ciserver.store.dispatch import lock_project
from ciserver.store.events import record_build, record_job
from ciserver.store.models import Build, Delivery, Job, Project, utcnow


@dataclass(frozen=True)
class PushRecord:
    """What a webhook tells us about a push, in the store's own terms."""

    ref: str
    branch: str | None
    tag: str | None
    sha: str
    before: str | None
    message: str
    author: str
    changed_files: list[str] | None
    default_branch: str | None = None


def record_push(
    session: Session, project: Project, push: PushRecord, *, forge: str, delivery_id: str | None
) -> tuple[Build, bool]:
    """Insert the build (and its delivery id) in one transaction; a known delivery gives its first build.

    Returns the build and whether it is new. The unique (forge, delivery_id) constraint, not a
    lookup, decides between two copies of one delivery arriving at the same moment; the project's
    lock, between one push replayed under two delivery ids at once.
    """
    lock_project(session, project.id)
    if delivery_id:
        known = _delivered_build(session, forge, delivery_id)
        if known is not None:
            return known, False
    replayed = _same_push(session, project.id, push)
    if replayed is not None:
        return replayed, False
    build = Build(project_id=project.id, **_fitted(push))
    try:
        with session.begin_nested():
            session.add(build)
            session.flush()
            if delivery_id:
                session.add(Delivery(forge=forge, delivery_id=delivery_id, build_id=build.id))
                session.flush()
    except IntegrityError:
        known = _delivered_build(session, forge, delivery_id or "")
        if known is None:
            raise
        return known, False
    record_build(session, build)
    return build, True


def _fitted(push: PushRecord) -> dict[str, Any]:
    """The push's columns, each within its length on every database: the author is a display name,
    cut to fit; a default branch too long to keep is left unknown (refs are bounded by the forges'
    parsers)."""
    fields = asdict(push)
    fields["author"] = push.author[:AUTHOR_LENGTH]
    if push.default_branch is not None and len(push.default_branch) > DEFAULT_BRANCH_LENGTH:
        fields["default_branch"] = None
    return fields


AUTHOR_LENGTH = Build.__table__.c.author.type.length
DEFAULT_BRANCH_LENGTH = Build.__table__.c.default_branch.type.length


def _same_push(session: Session, project_id: int, push: PushRecord) -> Build | None:
    """The build of an identical push (ref, before and after): a signed body replayed under a new
    delivery id is the same push, not a new one. A rebuild is POST /builds/{id}/retry."""
    if push.before is None:
        return None
    return session.scalar(
        select(Build)
        .where(
            Build.project_id == project_id,
            Build.ref == push.ref,
            Build.sha == push.sha,
            Build.before == push.before,
            Build.retry_of.is_(None),
        )
        .order_by(Build.id)
        .limit(1)
    )


def _delivered_build(session: Session, forge: str, delivery_id: str) -> Build | None:
    return session.scalar(
        select(Build)
        .join(Delivery, Delivery.build_id == Build.id)
        .where(Delivery.forge == forge, Delivery.delivery_id == delivery_id)
    )


def list_builds(
    session: Session,
    *,
    project: str | None = None,
    branch: str | None = None,
    status: Status | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Build], int]:
    """Newest first, with the total matching count for paging."""
    query = select(Build)
    if project is not None:
        query = query.join(Project, Project.id == Build.project_id).where(Project.name == project)
    if branch is not None:
        query = query.where(Build.branch == branch)
    if status is not None:
        query = query.where(Build.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Build.id.desc()).limit(limit).offset(offset))
    return list(items), total


def get_build(session: Session, build_id: int) -> Build | None:
    return session.scalar(select(Build).where(Build.id == build_id).options(selectinload(Build.jobs)))


def get_job(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def cancel_build(session: Session, build_id: int, reason: str = "canceled") -> list[int] | None:
    """Cancel a build that has not finished; returns the ids of its jobs still running.

    Queued jobs are marked here so a worker's conditional start finds nothing to start; running
    ones are stopped by their worker once told (see ciserver.queue.request_cancel).
    None when the build had already finished.
    """
    now = utcnow()
    changed = session.execute(
        update(Build)
        .where(Build.id == build_id, Build.status.in_([Status.queued, Status.running]))
        .values(status=Status.canceled, error=reason, finished_at=now)
    ).rowcount
    if not changed:
        return None
    record_build(session, build_id)
    canceled = session.scalars(
        update(Job)
        .where(Job.build_id == build_id, Job.status == Status.queued)
        .values(status=Status.canceled, finished_at=now)
        .returning(Job.id)
    )
    for job_id in sorted(canceled):
        record_job(session, job_id)
    running = session.scalars(select(Job.id).where(Job.build_id == build_id, Job.status == Status.running))
    return list(running)


def retry_build(session: Session, build: Build) -> Build:
    """A new build of the same commit, queued like a fresh push."""
    copied: dict[str, Any] = {f.name: getattr(build, f.name) for f in fields(PushRecord)}
    retry = Build(
        project_id=build.project_id,
        retry_of=build.id,
        source=build.source,
        variables=build.variables,
        **copied,
    )
    session.add(retry)
    session.flush()
    record_build(session, retry)
    return retry


def queued_build_ids(session: Session, *, created_before: Any) -> list[int]:
    """Builds recorded but not yet picked up by a worker, oldest first: the outbox."""
    query = select(Build.id).where(Build.status == Status.queued, Build.created_at < created_before)
    return list(session.scalars(query.order_by(Build.id).limit(1000)))


def unplanned_running_build_ids(session: Session, *, started_before: Any) -> list[int]:
    """Builds taken by a worker that have no jobs yet: planning, or planning lost with its worker."""
    has_jobs = select(Job.build_id).where(Job.build_id == Build.id).exists()
    query = select(Build.id).where(
        Build.status == Status.running, Build.started_at < started_before, ~has_jobs
    )
    return list(session.scalars(query.order_by(Build.id).limit(1000)))


def requeue_builds(session: Session, build_ids: Sequence[int]) -> list[int]:
    """running -> queued for builds whose planning was lost (planning commits its jobs at once, so
    a build without jobs has nothing half done); the outbox enqueues them. Returns those changed."""
    changed = []
    for build_id in build_ids:
        done = session.execute(
            update(Build)
            .where(
                Build.id == build_id,
                Build.status == Status.running,
                ~select(Job.id).where(Job.build_id == build_id).exists(),
            )
            .values(status=Status.queued, started_at=None)
        ).rowcount
        if done:
            record_build(session, build_id)
            changed.append(build_id)
    return changed


def auto_cancel_older(session: Session, build: Build) -> list[int]:
    """Cancel the older builds of the same branch that have not finished, when the project says so
    (by default on every branch but the default one, as a new push makes them moot).

    Returns the ids of their jobs still running, to be told to stop.
    """
    enabled = build.project.auto_cancel
    if enabled is None:
        enabled = build.branch is not None and build.branch != build.default_branch
    if not enabled or build.branch is None:
        return []
    older = select(Build.id).where(
        Build.project_id == build.project_id,
        Build.branch == build.branch,
        Build.id < build.id,
        Build.status.in_([Status.queued, Status.running]),
    )
    running: list[int] = []
    for build_id in list(session.scalars(older)):
        running += cancel_build(session, build_id, reason=f"canceled: superseded by build {build.id}") or []
    return running
