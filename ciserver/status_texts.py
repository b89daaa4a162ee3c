"""What a build's commit statuses say: the state and the reason of its pipeline and of each job.

Pure: from a build and its jobs as the store holds them to (context, state, description), with no
I/O, so the words are tested apart from the outbox that sends them (ciserver.statuses). The names
and errors quoted come from the pusher: they are only ever sent as JSON string values, and every
forge caps the description to its own limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ciserver.forges.base import StatusState
from ciserver.states import Status, When
from ciserver.store.models import Build, Job

PIPELINE_CONTEXT = "ciserver"
MAX_CONTEXT = 255  # the store's column; GitHub and GitLab keep 255 too
_LISTED = 3  # names quoted in a description before "and N more"


@dataclass(frozen=True)
class WantedStatus:
    """A commit status as the forge should show it now."""

    context: str
    state: StatusState
    description: str


def job_context(job: Job) -> str:
    """`ciserver/NAME`: the job's own line on the forge."""
    return f"{PIPELINE_CONTEXT}/{job.name}"[:MAX_CONTEXT]


def wanted_statuses(build: Build, *, per_job: bool) -> list[WantedStatus]:
    """The pipeline's status, then (with `per_job`) one per job, in the pipeline's order."""
    wanted = [WantedStatus(PIPELINE_CONTEXT, *_build_state(build))]
    if per_job:
        wanted.extend(WantedStatus(job_context(job), *_job_state(build, job)) for job in build.jobs)
    return wanted


def _build_state(build: Build) -> tuple[StatusState, str]:
    jobs = list(build.jobs)
    match build.status:
        case Status.queued:
            return StatusState.pending, "queued: waiting for a worker"
        case Status.running:
            return StatusState.running, _running(jobs)
        case Status.success:
            return StatusState.success, f"passed{_took(build.started_at, build.finished_at)}"
        case Status.failed:
            failing = [job for job in jobs if job.status == Status.failed and not job.allow_failure]
            return StatusState.failure, "failed: " + (
                _names(failing, "failed") if failing else build.error or "a job failed"
            )
        case Status.error:
            broken = [job for job in jobs if job.status == Status.error]
            reason = build.error or (f"{_names(broken, 'ended in error')}" if broken else "")
            return StatusState.error, f"error: {reason or 'the build could not run'}"
        case Status.canceled:
            return StatusState.canceled, "canceled"
        case _:
            return StatusState.skipped, f"skipped: {build.error or 'nothing to build'}"


def _job_state(build: Build, job: Job) -> tuple[StatusState, str]:
    match job.status:
        case Status.queued:
            return StatusState.pending, _why_waiting(build, job)
        case Status.running:
            attempt = f" (attempt {job.attempt})" if job.attempt > 1 else ""
            return StatusState.running, f"running{attempt}"
        case Status.success:
            return StatusState.success, f"passed{_took(job.started_at, job.finished_at)}"
        case Status.failed:
            exit_code = f" (exit code {job.exit_code})" if job.exit_code is not None else ""
            if job.allow_failure:
                # Allowed to fail: it must not turn the forge's combined status red.
                return StatusState.success, f"failed{exit_code}, and is allowed to"
            return StatusState.failure, f"failed{exit_code}{_reason(job.error)}"
        case Status.error:
            return StatusState.error, f"error{_reason(job.error) or ': the job could not run'}"
        case Status.canceled:
            return StatusState.canceled, "canceled"
        case _:
            if job.when == When.manual:
                return StatusState.skipped, "manual: waiting for someone to play it"
            return StatusState.skipped, f"skipped{_reason(job.error) or ': an earlier job failed'}"


def _why_waiting(build: Build, job: Job) -> str:
    """Why a queued job has not started: the jobs it waits for, or a free worker."""
    if job.dispatched_at is not None:
        return "waiting for a free worker"
    by_name = {other.name: other for other in build.jobs}
    waiting_for = [by_name[name] for name in job.after if name in by_name and not by_name[name].status.final]
    if waiting_for:
        return "waiting for " + _names(waiting_for, "")
    return "waiting for a free worker"


def _running(jobs: list[Job]) -> str:
    if not jobs:
        return "running: reading the pipeline"
    done = sum(job.status.final for job in jobs)
    running = [job for job in jobs if job.status == Status.running]
    now = f": {_names(running, '')}" if running else ""
    return f"running{now} ({done} of {len(jobs)} jobs done)"


def _names(jobs: list[Job], verb: str) -> str:
    """'unit and lint failed', 'a, b, c and 2 more ended in error'."""
    names = [job.name for job in jobs]
    shown = names[:_LISTED]
    more = len(names) - len(shown)
    if more:
        text = f"{', '.join(shown)} and {more} more"
    elif len(shown) > 1:
        text = f"{', '.join(shown[:-1])} and {shown[-1]}"
    else:
        text = shown[0] if shown else ""
    return f"{text} {verb}".rstrip()


def _reason(error: str | None) -> str:
    return f": {error}" if error else ""


def _took(started: datetime | None, finished: datetime | None) -> str:
    if started is None or finished is None:
        return ""
    seconds = max(0, round((finished - started).total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    return f" in {minutes}m {seconds}s" if minutes else f" in {seconds}s"
