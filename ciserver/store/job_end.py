"""What happens when an attempt of a job ends, in one path whoever saw it end: the worker that ran it
(workers.tasks), the reaper for a job whose worker is lost (workers.reaper), and a worker's internal
error. The job goes back to the queue (handed back, or as its retry policy says) or gets its final
status with what it made; then the jobs whose turn has come are dispatched, the build settles once
every job is final (store.dispatch), and a green build's release makes its deployments.

Every change of state is one conditional UPDATE in the caller's transaction, so of two workers
ending the same job only one wins. The caller hands out what comes back once it has committed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.orm import Session

from ciserver.states import Status, StopReason
from ciserver.store.artifacts import KeptFile, add_artifacts
from ciserver.store.dispatch import Dispatched, advance, requeue_for_retry, should_retry
from ciserver.store.models import Job
from ciserver.store.releases import deployments_for_green_build
from ciserver.store.transitions import end_job


class MadeImage(Protocol):
    """An image_build job's image (workers.executors.base.BuiltImage has these)."""

    tag: str
    image_id: str
    digest: str


@dataclass(frozen=True)
class AttemptEnd:
    """How one attempt ended, as its worker saw it, and what it made for the jobs after it."""

    status: Status  # queued: its worker stopped and hands it back to the queue
    exit_code: int | None = None
    error: str | None = None
    stopped_by: StopReason | None = None  # None: it ended by itself
    kept: Sequence[KeptFile] = ()
    expire_in: int = 0  # seconds the kept files stay
    image: MadeImage | None = None


class Verdict(enum.StrEnum):
    """What an attempt's end made of its job."""

    handed_back = "handed_back"  # queued again as its next attempt, since its worker stopped
    retrying = "retrying"  # queued again as its next attempt, as its retry policy says
    final = "final"  # its final status, unless it had one already


@dataclass(frozen=True)
class JobEnded:
    """The job after its attempt's end, and the work that end gives out."""

    verdict: Verdict
    status: Status | None  # what this end made the job; None when it had ended already
    attempt: int  # the attempt that ended
    dispatched: list[Dispatched] = field(default_factory=list)
    deployments: list[int] = field(default_factory=list)


def end_attempt(
    session: Session, job_id: int, end: AttemptEnd, *, concurrency: int = 0, may_retry: bool = True
) -> JobEnded | None:
    """The job's next attempt or final status, then what follows in its build; None when there is no
    such job. With `may_retry` False its retry policy is not asked: what failed was the worker's own
    code, not the job's run."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    attempt = job.attempt
    if end.status == Status.queued and requeue_for_retry(session, job_id):
        verdict, status = Verdict.handed_back, Status.queued
    elif may_retry and should_retry(job, end.status, end.stopped_by) and requeue_for_retry(session, job_id):
        verdict, status = Verdict.retrying, Status.queued
    else:
        ended = end_job(session, job_id, end.status, exit_code=end.exit_code, error=end.error)
        verdict, status = Verdict.final, end.status if ended else None
        _record_what_it_made(session, job, end)
    dispatched = advance(session, job.build_id, concurrency)
    return JobEnded(verdict, status, attempt, dispatched, deployments_for_green_build(session, job.build_id))


def end_lost_job(session: Session, job_id: int, reason: str, concurrency: int = 0) -> JobEnded | None:
    """A running job whose worker is gone: another attempt if its retry policy gives one (a lost
    worker counts as runner_failure), else `error` with the reason. None when it no longer runs.

    Every live worker's reaper finds the same lost job: the row is locked, so the second waits for
    the first's commit and sees the job queued for its retry, rather than ending that retry `error`."""
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None or job.status != Status.running:
        return None
    return end_attempt(session, job_id, AttemptEnd(Status.error, error=reason), concurrency=concurrency)


def _record_what_it_made(session: Session, job: Job, end: AttemptEnd) -> None:
    """The files it kept, for the jobs after it, and its image, the build's release artifact."""
    if end.kept:
        add_artifacts(session, job, end.kept, end.expire_in)
    if end.image is not None:
        job.image_tag, job.image_id, job.image_digest = end.image.tag, end.image.image_id, end.image.digest
