"""How the CLI client shows what the API answers: tables of builds and deployments, a build with its
stages and jobs, and why a job waits or failed.

Every value a pusher controls goes through `client_text.field` and into a `rich.text.Text`, never into
console markup, so a branch named `[bold red]x` or holding escape sequences prints as plain text.
Colour only on a terminal (rich honours NO_COLOR); off a terminal the lines are wide enough not to wrap.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ciserver.client_text import age, duration, field
from ciserver.states import DeploymentStatus, Status

STATUS_STYLE = {
    "success": "green",
    "succeeded": "green",
    "failed": "red",
    "error": "red",
    "rolled_back": "red",
    "running": "yellow",
    "progressing": "yellow",
    "paused": "magenta",
    "queued": "cyan",
    "pending": "cyan",
    "canceled": "dim",
    "skipped": "dim",
}
FINAL = frozenset(s.value for s in Status if s.final)
DEPLOYMENT_FINAL = frozenset(s.value for s in DeploymentStatus if s.final)


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr): colour on a terminal unless NO_COLOR is set, no wrapping off one."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(
        file=stream,
        highlight=False,
        no_color="NO_COLOR" in os.environ or not terminal,
        width=None if terminal else 250,
    )


def status_text(status: str | None) -> Text:
    value = field(status or "-")
    return Text(value, style=STATUS_STYLE.get(value, ""))


def builds_table(builds: Iterable[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("ID", "PROJECT", "REF", "SHA", "STATUS", "AGE", "DURATION"):
        table.add_column(column, no_wrap=True)
    for build in builds:
        table.add_row(
            str(build["id"]),
            Text(field(build["project"], 60)),
            Text(field(build.get("branch") or build.get("tag") or build["ref"], 40)),
            Text(field(build["sha"])[:8]),
            status_text(build["status"]),
            age(build.get("created_at")),
            duration(build.get("started_at"), build.get("finished_at")),
        )
    return table


def job_reason(job: dict[str, Any], jobs_by_name: dict[str, dict[str, Any]]) -> str:
    """Why a job is where it is: what a queued job waits for, why one failed or was skipped."""
    status = job["status"]
    if status == "queued":
        waiting = [n for n in job.get("after", []) if jobs_by_name.get(n, {}).get("status") not in FINAL]
        return f"waits for {', '.join(waiting)}" if waiting else "waits for a free worker"
    if status == "skipped" and job.get("when") == "manual" and not job.get("error"):
        return f"manual: start it with POST /api/v1/jobs/{job['id']}/play"
    parts = []
    if status == "failed" and job.get("exit_code") is not None and not names_exit(job):
        parts.append(f"exit code {job['exit_code']}")
    if job.get("error"):
        parts.append(str(job["error"]))
    if status == "failed" and job.get("allow_failure"):
        parts.append("allowed to fail")
    if (job.get("attempt") or 1) > 1:
        parts.append(f"attempt {job['attempt']}")
    return "; ".join(parts)


def names_exit(job: dict[str, Any]) -> bool:
    """Whether the job's error already says its exit code (the server's does for a script failure)."""
    return f"exit code {job.get('exit_code')}" in (job.get("error") or "")


def build_view(build: dict[str, Any]) -> list[Any]:
    """The build's heading and one table of its jobs, in stage order, for Console.print."""
    ref = build.get("branch") or build.get("tag") or build["ref"]
    head = Text()
    head.append(f"build {build['id']} ", style="bold")
    head.append(f"{field(build['project'])} {field(ref)} {field(build['sha'])[:12]}  ")
    head.append_text(status_text(build["status"]))
    head.append(f"  {duration(build.get('started_at'), build.get('finished_at'))}")
    lines: list[Any] = [head]
    message = field(build.get("message") or "", 100)
    if message:
        lines.append(Text(f"  {message} ({field(build.get('author') or '', 60)})", style="dim"))
    if build.get("error"):
        lines.append(Text(f"  {field(build['error'], 500)}", style=STATUS_STYLE.get(build["status"], "")))
    jobs = build.get("jobs") or []
    if not jobs:
        lines.append(Text("  no jobs yet" if build["status"] not in FINAL else "  no jobs"))
        return lines
    by_name = {job["name"]: job for job in jobs}
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("STAGE", "JOB", "ID", "STATUS", "DURATION", "WHY"):
        table.add_column(column, no_wrap=column != "WHY")
    for job in jobs:
        table.add_row(
            Text(field(job["stage"], 40)),
            Text(field(job["name"], 60)),
            str(job["id"]),
            status_text(job["status"]),
            duration(job.get("started_at"), job.get("finished_at")),
            Text(field(job_reason(job, by_name), 300)),
        )
    lines.append(table)
    return lines


def deployments_table(deployments: Iterable[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("ID", "ENV", "BUILD", "SHA", "ACTION", "STRATEGY", "STATUS", "WEIGHT", "AGE", "BY"):
        table.add_column(column, no_wrap=True)
    for deployment in deployments:
        table.add_row(
            str(deployment["id"]),
            Text(field(deployment["environment"])),
            str(deployment["build_id"]),
            Text(field(deployment["sha"])[:8]),
            Text(field(deployment["action"])),
            Text(field(deployment["strategy"])),
            status_text(deployment["status"]),
            f"{deployment['weight']}%",
            age(deployment.get("created_at")),
            Text(field(deployment.get("triggered_by"), 40)),
        )
    return table


def step_line(step: dict[str, Any]) -> Text:
    """One finished step of a rollout: its weight and what the analysis counted."""
    line = Text(f"  step {step.get('step', '?')}: weight {step.get('weight', '?')}%")
    if "requests" in step:
        rate = step.get("error_rate") or 0.0
        line.append(f", {step['requests']} requests, {step.get('errors', 0)} errors ({rate:.1%})")
    if step.get("exit_code") is not None:  # a script deploy's step
        line.append(f", script exited {step['exit_code']}", style="" if step["exit_code"] == 0 else "red")
    if step.get("healthy") is not None:
        line.append(", healthy" if step["healthy"] else ", unhealthy", style="" if step["healthy"] else "red")
    return line


def deployment_view(deployment: dict[str, Any]) -> list[Any]:
    head = Text()
    head.append(f"deployment {deployment['id']} ", style="bold")
    head.append(f"{field(deployment['project'])} {field(deployment['environment'])}: ")
    head.append(f"build {deployment['build_id']} {field(deployment['sha'])[:12]} ")
    head.append(f"by {field(deployment['action'])} ({field(deployment['strategy'])})  ")
    head.append_text(status_text(deployment["status"]))
    head.append(f"  weight {deployment['weight']}%")
    lines: list[Any] = [head]
    if deployment.get("reason"):
        lines.append(Text(f"  {field(deployment['reason'], 500)}"))
    lines.extend(step_line(step) for step in deployment.get("steps") or [])
    lines.append(Text(f"  triggered by {field(deployment.get('triggered_by'), 80)}", style="dim"))
    return lines


def environments_table(environments: Iterable[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in ("ENV", "LISTEN", "STRATEGY", "BUILD", "SHA", "SINCE", "BY", "LATEST"):
        table.add_column(column, no_wrap=True)
    for env in environments:
        release = env.get("release") or {}
        latest = env.get("latest_deployment")
        latest_text = Text("-")
        if latest:
            latest_text = Text(f"{latest['id']} ")
            latest_text.append_text(status_text(latest["status"]))
        table.add_row(
            Text(field(env["name"])),
            Text(field(env.get("listen") or "-")),
            Text(field(env.get("strategy") or "-")),
            str(release.get("build_id", "-")),
            Text(field(release.get("sha") or "-")[:8]),
            age(env.get("since")),
            Text(field(env.get("deployed_by") or "-", 40)),
            latest_text,
        )
    return table
