"""State changes the workers make. Each is one conditional UPDATE, so two workers racing on the
same build or job cannot both win, and a canceled build is never started again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ciserver.pipeline import JobOptions
from ciserver.states import Status, When
from ciserver.store.events import record_build, record_job
from ciserver.store.models import Build, Job, utcnow

ACTIVE = (Status.queued, Status.running)


class JobPlan(Protocol):
    """What the store needs of a planned job (ciserver.pipeline.PlannedJob has it)."""

    name: str
    stage: str
    image: str
    script: list[str]
    env: dict[str, str]
    timeout: int
    after: tuple[str, ...]
    when: str
    allow_failure: bool
    options: JobOptions


def start_build(session: Session, build_id: int) -> Build | None:
    """queued -> running; None when another worker got it first, or it was canceled."""
    changed = session.execute(
        update(Build)
        .where(Build.id == build_id, Build.status == Status.queued)
        .values(status=Status.running, started_at=utcnow())
    ).rowcount
    if not changed:
        return None
    record_build(session, build_id)
    return session.get(Build, build_id)


def end_build(session: Session, build_id: int, status: Status, error: str | None = None) -> bool:
    """Give a build that has not finished yet its final status; False if it already had one."""
    changed = session.execute(
        update(Build)
        .where(Build.id == build_id, Build.status.in_(ACTIVE))
        .values(status=status, error=error, finished_at=utcnow())
    ).rowcount
    if changed:
        record_build(session, build_id)
    return bool(changed)


def add_jobs(session: Session, build_id: int, plan: Sequence[JobPlan]) -> list[Job]:
    jobs = [
        Job(
            build_id=build_id,
            position=position,
            name=p.name,
            stage=p.stage,
            image=p.image,
            script=list(p.script),
            env=dict(p.env),
            timeout=p.timeout,
            after=list(p.after),
            when=When(p.when),
            allow_failure=p.allow_failure,
            options=p.options.stored(),
        )
        for position, p in enumerate(plan)
    ]
    session.add_all(jobs)
    session.flush()
    for job in jobs:
        record_job(session, job)
    return jobs


def start_job(session: Session, job_id: int, worker: str) -> Job | None:
    """queued -> running while its build runs; None when canceled or already taken."""
    running_build = select(Build.id).where(Build.status == Status.running).scalar_subquery()
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == Status.queued, Job.build_id.in_(running_build))
        .values(status=Status.running, started_at=utcnow(), worker=worker)
    ).rowcount
    if not changed:
        return None
    record_job(session, job_id)
    return session.get(Job, job_id)


def end_job(
    session: Session, job_id: int, status: Status, *, exit_code: int | None = None, error: str | None = None
) -> bool:
    """Give a job that has not finished its final status; False if it already had one."""
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE))
        .values(status=status, exit_code=exit_code, error=error, finished_at=utcnow())
    ).rowcount
    if changed:
        record_job(session, job_id)
    return bool(changed)


def settle_build(session: Session, build_id: int) -> Status | None:
    """Once every job is final, give the build the status its jobs add up to; else None."""
    jobs = list(session.scalars(select(Job).where(Job.build_id == build_id).order_by(Job.position)))
    if any(not job.status.final for job in jobs):
        return None
    status, error = _outcome(jobs)
    end_build(session, build_id, status, error)
    return status


def _outcome(jobs: Sequence[Job]) -> tuple[Status, str | None]:
    """Errors first, then failures; a job allowed to fail is shown failed but leaves the build green."""
    counted = [job for job in jobs if not job.allow_failure]
    for job in counted:
        if job.status == Status.error:
            return Status.error, f"job {job.name!r}: {job.error or 'error'}"
    for job in counted:
        if job.status == Status.failed:
            return Status.failed, f"job {job.name!r} failed" + (f": {job.error}" if job.error else "")
    if any(job.status == Status.canceled for job in jobs):
        return Status.canceled, "canceled"
    return Status.success, None
