"""`ciserver watch` and `ciserver deployment --follow`: a build or a deployment followed from the event
stream until it ends, not by polling.

The stream says what changed from the moment it is connected; what happened before is read once from
the API right after each (re)connection, so nothing falls between the two. A build's jobs appear as
events too (they are created when the build is planned), so the set of jobs grows as it runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from httpx_sse import ServerSentEvent
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from ciserver.client import Client, StreamOpened
from ciserver.client_render import DEPLOYMENT_FINAL, FINAL, names_exit, status_text, step_line
from ciserver.client_text import duration
from ciserver.client_text import field as safe


@dataclass
class BuildState:
    """What is known of one build and its jobs; `apply` returns the lines worth telling."""

    build: dict[str, Any]
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for job in self.build.get("jobs") or []:
            self.jobs[job["id"]] = job

    @property
    def done(self) -> bool:
        return self.build["status"] in FINAL

    @property
    def finished_jobs(self) -> int:
        return sum(1 for job in self.jobs.values() if job["status"] in FINAL)

    def opening(self) -> list[Text]:
        """The build as it stands when the watch starts: a heading, then each job known so far."""
        build = self.build
        ref = build.get("branch") or build.get("tag") or build["ref"]
        head = Text(f"build {build['id']} {safe(build['project'])} {safe(ref)} {safe(build['sha'])[:12]}: ")
        head.stylize("bold")
        head.append_text(status_text(build["status"]))
        return [head, *(job_line(job) for job in self.jobs.values())]

    def snapshot(self, build: dict[str, Any]) -> list[Text]:
        """The build as the API shows it now: a line per job whose status is news."""
        lines = [line for job in build.get("jobs") or [] for line in self._job(job)]
        return lines + self._build(build)

    def apply(self, kind: str, data: dict[str, Any]) -> list[Text]:
        if kind == "job" and data.get("build_id") == self.build["id"]:
            return self._job(data)
        if kind == "build" and data.get("id") == self.build["id"]:
            return self._build(data)
        return []

    def _job(self, data: dict[str, Any]) -> list[Text]:
        known = self.jobs.get(data["id"])
        if (
            known is not None
            and known["status"] == data["status"]
            and known.get("attempt") == data.get("attempt")
        ):
            return []
        self.jobs[data["id"]] = {**(known or {}), **data}
        return [job_line(self.jobs[data["id"]])]

    def _build(self, data: dict[str, Any]) -> list[Text]:
        changed = data["status"] != self.build["status"]
        self.build = {**self.build, **{k: v for k, v in data.items() if k != "jobs"}}
        return [build_line(self.build)] if changed else []


def job_line(job: dict[str, Any]) -> Text:
    line = Text(f"job {job['id']} {safe(job.get('stage', ''), 40)}/{safe(job['name'], 60)}: ")
    line.append_text(status_text(job["status"]))
    if job["status"] in FINAL and job.get("started_at"):
        line.append(f" in {duration(job.get('started_at'), job.get('finished_at'))}")
    if job["status"] == "failed" and job.get("exit_code") is not None and not names_exit(job):
        line.append(f" (exit code {job['exit_code']})")
    if job.get("error"):
        line.append(f": {safe(job['error'], 300)}")
    if (job.get("attempt") or 1) > 1:
        line.append(f" (attempt {job['attempt']})")
    return line


def build_line(build: dict[str, Any]) -> Text:
    line = Text(f"build {build['id']}: ", style="bold")
    line.append_text(status_text(build["status"]))
    if build["status"] in FINAL and build.get("started_at"):
        line.append(f" in {duration(build.get('started_at'), build.get('finished_at'))}")
    if build.get("error"):
        line.append(f": {safe(build['error'], 300)}")
    return line


@dataclass
class DeploymentState:
    """What is known of one deployment: its status, weight and the steps already told."""

    deployment: dict[str, Any]
    steps_told: int = 0
    told: tuple[str, int] | None = None

    @property
    def done(self) -> bool:
        return self.deployment["status"] in DEPLOYMENT_FINAL

    def update(self, deployment: dict[str, Any]) -> list[Text]:
        self.deployment = deployment
        steps = deployment.get("steps") or []
        lines = [step_line(step) for step in steps[self.steps_told :]]
        self.steps_told = len(steps)
        now = (deployment["status"], deployment["weight"])
        if now != self.told:
            self.told = now
            line = Text(f"deployment {deployment['id']}: ", style="bold")
            line.append_text(status_text(deployment["status"]))
            line.append(f", weight {deployment['weight']}%")
            if deployment.get("reason"):
                line.append(f": {safe(deployment['reason'], 300)}")
            lines.append(line)
        return lines


def watch_build(client: Client, build_id: int, console: Console, *, as_json: bool) -> str:
    """Tell a build's progress until it ends; returns its final status."""
    state = BuildState(client.build(build_id))
    if as_json:
        _json_line(console, "build", state.build)
    if not as_json:
        _tell(console, None, state.opening())
    if state.done:
        if not as_json:
            _tell(console, None, [build_line(state.build)])
        return state.build["status"]
    with _progress(console, as_json, percent=False) as progress:
        task = progress.add_task(f"build {build_id}", total=None) if progress else None
        for event in client.events(state.build["project"]):
            if isinstance(event, StreamOpened):
                lines = state.snapshot(client.build(build_id))
            else:
                data = _data(event)
                lines = state.apply(event.event, data)
                if as_json and lines:
                    _json_line(console, event.event, data)
            if not as_json:
                _tell(console, progress, lines)
            if progress is not None and task is not None:
                progress.update(task, total=len(state.jobs) or None, completed=state.finished_jobs)
            if state.done:
                break
    return state.build["status"]


def follow_deployment(client: Client, deployment_id: int, console: Console, *, as_json: bool) -> str:
    """Tell a deployment's steps, weights and figures until it ends; returns its final status."""
    state = DeploymentState(client.deployment(deployment_id))
    first = state.update(state.deployment)
    if as_json:
        _json_line(console, "deployment", state.deployment)
    if state.done:
        if not as_json:
            _tell(console, None, first)
        return state.deployment["status"]
    with _progress(console, as_json, percent=True) as progress:
        task = progress.add_task(f"deployment {deployment_id} weight", total=100) if progress else None
        if not as_json:
            _tell(console, progress, first)
        for event in client.events(state.deployment["project"]):
            if isinstance(event, StreamOpened) or (
                event.event == "deployment" and _data(event).get("id") == deployment_id
            ):
                lines = state.update(client.deployment(deployment_id))
                if as_json and lines:
                    _json_line(console, "deployment", state.deployment)
                elif lines:
                    _tell(console, progress, lines)
                if progress is not None and task is not None:
                    progress.update(task, completed=state.deployment["weight"])
            if state.done:
                break
    return state.deployment["status"]


def _data(event: ServerSentEvent) -> dict[str, Any]:
    data = event.json()
    return data if isinstance(data, dict) else {}


def _tell(console: Console, progress: Progress | None, lines: Iterable[Text]) -> None:
    for line in lines:
        (progress.console if progress is not None else console).print(line)


def _json_line(console: Console, kind: str, data: dict[str, Any]) -> None:
    """One JSON document per line (for scripts): the API's object or the event's data as it came."""
    console.file.write(json.dumps({"kind": kind, **data}) + "\n")
    console.file.flush()


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def _progress(console: Console, as_json: bool, *, percent: bool) -> Progress | _NoProgress:
    """A progress bar on a terminal only (and never under --json): jobs ended of all, or a percentage."""
    if as_json or not console.is_terminal:
        return _NoProgress()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn() if percent else MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
