"""What runs next in a build: the DAG, `when`, `allow_failure`, manual jobs, retries and the
per-project limit, decided in the database so that every worker reaches the same answer.

A job waits (`queued`, not yet dispatched) until every job in its `after` list is final. Then its
`when` decides: it is dispatched (handed to the queue), or skipped with the reason. Dispatching
is bounded by the project's concurrency limit; a job that finds no free slot stays waiting and
is dispatched when another job of the project ends. Each call runs in the caller's transaction
and locks the project's row first, so two workers ending jobs at the same moment never both
miss (or both take) the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ciserver.pipeline import JobOptions, OptionsError, Retry
from ciserver.states import Status, StopReason, When
from ciserver.store.events import record_build, record_job
from ciserver.store.models import Build, Job, Project, utcnow
from ciserver.store.transitions import ACTIVE, end_job, settle_build

MANUAL_WAITING = "manual job: start it with POST /api/v1/jobs/{id}/play"


@dataclass(frozen=True)
class Dispatched:
    """A job handed to the queue: what `ciserver.queue.enqueue_jobs` needs."""

    job_id: int
    attempt: int
    timeout: int


def advance(session: Session, build_id: int, concurrency: int = 0) -> list[Dispatched]:
    """Skip or dispatch every job of the build whose turn has come, settle the build when all are
    final, then give freed slots to the project's other builds, oldest first."""
    build = session.get(Build, build_id)
    if build is None:
        return []
    lock_project(session, build.project_id)
    dispatched = _advance_build(session, build, concurrency)
    if concurrency:
        others = select(Build).where(
            Build.project_id == build.project_id, Build.status == Status.running, Build.id != build_id
        )
        for other in session.scalars(others.order_by(Build.id)):
            dispatched += _advance_build(session, other, concurrency)
    return dispatched


def lock_project(session: Session, project_id: int) -> None:
    """Take turns with other transactions deciding for this project, until this one ends."""
    # FOR NO KEY UPDATE on PostgreSQL: it excludes the other lockers, but not the KEY SHARE lock an
    # insert referencing the project takes (an event row, written with every change), so two workers
    # that each wrote an event before locking do not deadlock. SQLite's BEGIN IMMEDIATE (see
    # store.db) already serializes writers.
    session.execute(select(Project.id).where(Project.id == project_id).with_for_update(key_share=True))
    # Rows read before the lock may have changed since (another worker's job ended): read them again.
    session.expire_all()


def _advance_build(session: Session, build: Build, concurrency: int) -> list[Dispatched]:
    if build.status != Status.running:
        return []
    dispatched: list[Dispatched] = []
    changed = True
    while changed:  # a skip can decide the jobs after it: go round until nothing moves
        changed = False
        jobs = list(session.scalars(select(Job).where(Job.build_id == build.id).order_by(Job.position)))
        by_name = {job.name: job for job in jobs}
        for job in jobs:
            if job.status != Status.queued or job.dispatched_at is not None:
                continue
            before = [by_name[name] for name in job.after if name in by_name]
            if any(not p.status.final for p in before):
                continue
            reason = _skip_reason(job, before)
            if reason is not None:
                end_job(session, job.id, Status.skipped, error=reason)
                changed = True
            elif concurrency and _busy(session, build.project_id) >= concurrency:
                continue  # waits for a free slot
            else:
                job.dispatched_at = utcnow()
                session.flush()
                dispatched.append(Dispatched(job.id, job.attempt, job.timeout))
        session.expire_all()
    settle_build(session, build.id)
    return dispatched


def _skip_reason(job: Job, before: Sequence[Job]) -> str | None:
    """None when the job should run now; else why it does not."""
    failed = [p for p in before if _failed(p)]
    if job.when == When.always:
        return None
    if job.when == When.on_failure:
        return None if failed else "when: on_failure, and no job before it failed"
    for p in before:
        if p.status == Status.skipped:
            if _waiting_manual(p):
                return f"needs {p.name!r}, a manual job that has not run"
            return f"{p.name!r} was skipped"
        if _failed(p):
            return f"{p.name!r} ended {p.status}"
    if job.when == When.manual:
        return MANUAL_WAITING.format(id=job.id)
    return None


def _waiting_manual(job: Job) -> bool:
    """A manual job not yet played (playing it makes it an on_success job)."""
    return job.when == When.manual and job.status == Status.skipped


def _failed(job: Job) -> bool:
    return job.status in (Status.failed, Status.error, Status.canceled) and not (
        job.allow_failure and job.status != Status.canceled
    )


def _busy(session: Session, project_id: int) -> int:
    """Jobs of the project on the queue or running."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .join(Build, Build.id == Job.build_id)
            .where(
                Build.project_id == project_id,
                Job.status.in_(ACTIVE),
                Job.dispatched_at.is_not(None),
            )
        )
        or 0
    )


def retry_kind(status: Status, stopped_by: StopReason | None) -> str | None:
    """The `retry.when` reason a job's end counts as, or None when it succeeded or was stopped."""
    if status == Status.error:
        return "runner_failure"
    if status == Status.failed:
        return "timeout" if stopped_by == StopReason.timeout else "script_failure"
    return None


def should_retry(job: Job, status: Status, stopped_by: StopReason | None) -> bool:
    """Whether the job's `retry` policy gives it another attempt after this end."""
    policy = _retry_policy(job)
    kind = retry_kind(status, stopped_by)
    if policy is None or kind is None or job.attempt > policy.max:
        return False
    return policy.covers(kind)


def _retry_policy(job: Job) -> Retry | None:
    """The job's `retry`; none for a row whose options cannot be read (its worker ends it in error
    with the reason)."""
    try:
        return JobOptions.from_stored(job.options).retry
    except OptionsError:
        return None


def requeue_for_retry(session: Session, job_id: int) -> bool:
    """running -> queued again, as its next attempt; False when it is no longer running."""
    changed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == Status.running)
        .values(
            status=Status.queued,
            attempt=Job.attempt + 1,
            dispatched_at=None,
            exit_code=None,
            error=None,
            started_at=None,
            worker=None,
        )
    ).rowcount
    if changed:
        record_job(session, job_id)
    return bool(changed)


def jobs_of_lost_workers(session: Session, alive: set[str]) -> list[tuple[int, str]]:
    """(job id, worker) of every running job whose worker is not among `alive`."""
    query = select(Job.id, Job.worker).where(Job.status == Status.running, Job.worker.is_not(None))
    return [(job_id, worker) for job_id, worker in session.execute(query) if worker not in alive]


def play_manual(session: Session, job: Job) -> bool:
    """Start a manual job that waits: it, and every skipped job after it, are queued again (the
    dispatcher decides each anew), and the build runs again. False when the job does not wait."""
    build = session.get_one(Build, job.build_id)
    lock_project(session, build.project_id)  # two plays at once: the second sees the first's
    if not _waiting_manual(job):
        return False
    jobs = list(session.scalars(select(Job).where(Job.build_id == job.build_id)))
    reopened = {job.name}
    grew = True
    while grew:
        grew = False
        for other in jobs:
            if other.name in reopened or other.status != Status.skipped:
                continue
            if reopened & set(other.after):
                reopened.add(other.name)
                grew = True
    now = utcnow()
    for other in jobs:
        if other.name in reopened:
            other.status, other.error, other.finished_at = Status.queued, None, None
            other.dispatched_at = None
            if other.id == job.id:
                other.when = When.on_success  # played: from now on it runs as any other job
    session.execute(
        update(Build)
        .where(Build.id == job.build_id)
        .values(
            status=Status.running,
            error=None,
            finished_at=None,
            started_at=func.coalesce(Build.started_at, now),
        )
    )
    session.flush()
    record_build(session, job.build_id)
    for other in jobs:
        if other.name in reopened:
            record_job(session, other)
    return True


def lost_dispatches(session: Session, *, dispatched_before: datetime) -> list[Dispatched]:
    """Jobs handed to the queue a while ago that no worker has started: the queue may have lost them."""
    query = select(Job).where(
        Job.status == Status.queued, Job.dispatched_at.is_not(None), Job.dispatched_at < dispatched_before
    )
    return [Dispatched(job.id, job.attempt, job.timeout) for job in session.scalars(query.limit(1000))]
