"""What every executor does, and the errors it may raise; one module per engine implements it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class JobSpec:
    """One job as an executor sees it: no pipeline file, no database, just what to run where."""

    job_id: int
    name: str
    image: str
    script: tuple[str, ...]
    env: Mapping[str, str]
    workspace: Path
    labels: Mapping[str, str] = field(default_factory=dict)


class ExecutorError(Exception):
    """The engine could not run the job (no image, engine unreachable): the job is `error`, not `failed`."""


OutputSink = Callable[[bytes], None]


class Executor(Protocol):
    def run(self, spec: JobSpec, output: OutputSink, stop: threading.Event) -> int:
        """Run the job to its end and return its exit code; once `stop` is set, end it early.

        Output goes to `output` as it comes. Nothing the job started may outlive this call.
        The executor sets `stop` itself when the job ends, to release its own watchers.
        """
        ...

    def remove_leftovers(
        self, labels: Mapping[str, str], keep: Callable[[Mapping[str, str]], bool]
    ) -> list[Mapping[str, str]]:
        """Remove what jobs carrying `labels` left behind, unless `keep` says its job still runs.

        Returns the labels of what was removed.
        """
        ...


def shell_script(lines: tuple[str, ...] | list[str]) -> str:
    """The script a job's shell runs: each line echoed as `$ line` before it runs, as GitLab does."""
    from shlex import quote

    out = []
    for line in lines:
        out.append(f"printf '%s\\n' {quote('$ ' + line)}")
        out.append(line)
    return "\n".join(out) + "\n"
