"""What the dashboard's pages show, worked out from the store's rows without I/O: ages and
durations, stages in order, and why a job is still waiting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ciserver.states import Status, When
from ciserver.store.models import Build, Job


def span(seconds: float) -> str:
    """`45s`, `3m 05s`, `2h 10m`, `3d 4h`: short enough for a table cell."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def age(when: datetime | None, now: datetime) -> str:
    return "" if when is None else f"{span((now - when).total_seconds())} ago"


def duration(started: datetime | None, finished: datetime | None, now: datetime) -> str:
    """How long it ran, or has run so far; empty before it started."""
    if started is None:
        return ""
    return span(((finished or now) - started) / timedelta(seconds=1))


def first_line(message: str, limit: int = 100) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


@dataclass(frozen=True)
class Stage:
    name: str
    jobs: list[Job]

    @property
    def status(self) -> str:
        """The stage's status as a pipeline graph shows it: the worst of its jobs, or its progress."""
        states = {job.status for job in self.jobs}
        for status in (Status.running, Status.failed, Status.error, Status.queued, Status.canceled):
            if status in states:
                return status.value
        return Status.success.value if Status.success in states else Status.skipped.value


def stages_of(build: Build) -> list[Stage]:
    """The build's jobs grouped by stage, stages in the order their first job comes."""
    order: dict[str, list[Job]] = {}
    for job in build.jobs:
        order.setdefault(job.stage, []).append(job)
    return [Stage(name, jobs) for name, jobs in order.items()]


def waits_to_be_played(job: Job) -> bool:
    """A manual job nobody started yet (it shows as skipped; playing it runs the build again)."""
    return job.when == When.manual and job.status == Status.skipped


def waiting_reason(job: Job, build: Build) -> str | None:
    """Why a job has not started yet (None once it has, or for good)."""
    if waits_to_be_played(job):
        return "manual: waits for someone to start it"
    if job.status != Status.queued:
        return None
    states = {other.name: other.status for other in build.jobs}
    waiting = [name for name in job.after if not states.get(name, Status.success).final]
    if waiting and job.when == When.manual:
        return f"manual: once {', '.join(waiting)} ended, waits for someone to start it"
    if waiting:
        return "waiting for " + ", ".join(waiting)
    if job.dispatched_at is None:
        return "waiting for a free slot of the project"
    return "waiting for a worker"
