"""What every executor does, and the errors it may raise; one module per engine implements it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ServiceSpec:
    """A container the job talks to over the network (a database, a web server), reached by `alias`."""

    image: str
    alias: str
    env: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None  # None: the image's default command


@dataclass(frozen=True)
class Limits:
    """What one container may use, so a runaway job cannot starve the worker's other jobs."""

    memory: int  # bytes; swap is not given on top
    cpus: float
    pids: int


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
    services: tuple[ServiceSpec, ...] = ()
    limits: Limits | None = None  # None: the engine's defaults (no limit)
    user: str | None = None  # None: the image's user
    network: str = "default"  # or "none": the job gets only a loopback interface
    # The container's name, to which the data dir's mark is added; default ciserver-job-<job_id>-<mark>.
    container: str | None = None


@dataclass(frozen=True)
class BuildCache:
    """Where an image build keeps the images of its steps, by a key of what made each: one folder
    per ref, written by builds of that ref only, and read with the default branch's as a fallback
    (as caches are), so no branch can put a step into another ref's images."""

    read: tuple[Path, ...]
    write: Path | None


@dataclass(frozen=True)
class ImageBuildSpec:
    """A Dockerfile build whose image is the build's release artifact."""

    job_id: int
    workspace: Path  # the checked-out workspace: nothing outside it reaches the build
    context: str  # relative to the workspace; resolved (after links) when the build starts
    dockerfile: str  # relative to context
    tag: str  # e.g. "ciserver/acme-app:<sha>", "REGISTRY/ciserver/acme-app:<sha>" with a registry
    target: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)  # of the step containers (the job's)
    image_labels: Mapping[str, str] = field(default_factory=dict)  # added to the image itself
    limits: Limits | None = None  # of each RUN step, as of a job
    network: str = "default"  # or "none": RUN steps get only a loopback interface
    cache: BuildCache | None = None  # None: every step is run
    registry: str | None = None  # HOST:PORT the image is pushed to once built; None: it stays here


@dataclass(frozen=True)
class JobExit:
    """How a job's container ended: its exit code, and whether `stop` had asked it to end (then it
    was killed, and the code is the kill's)."""

    exit_code: int
    stopped: bool


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str  # "sha256:..."
    digest: str  # the repo digest (REPO@sha256:...) once pushed, else the image id (the config's sha256)


class ExecutorError(Exception):
    """The engine could not run the job (no image, engine unreachable): the job is `error`, not `failed`."""


class BuildFailed(Exception):
    """The Dockerfile itself failed (a RUN step exited non-zero, a COPY source is missing): the job is
    `failed`, not `error`."""


OutputSink = Callable[[bytes], None]


class Executor(Protocol):
    """`stop` is the caller's way to ask for an early end; an executor only reads it, and says how
    the job ended by what it returns."""

    def run(self, spec: JobSpec, output: OutputSink, stop: threading.Event) -> JobExit:
        """Run the job to its end and return how it ended; once `stop` is set, end it early.

        Output goes to `output` as it comes. Nothing the job started (its container, its services,
        their network) may outlive this call.
        """
        ...

    def build_image(self, spec: ImageBuildSpec, output: OutputSink, stop: threading.Event) -> BuiltImage:
        """Build the image, streaming the build's output; once `stop` is set, abort it (ExecutorError).

        A failing Dockerfile raises BuildFailed.
        """
        ...

    def remove_leftovers(
        self, labels: Mapping[str, str], keep: Callable[[Mapping[str, str]], bool]
    ) -> list[Mapping[str, str]]:
        """Remove what jobs carrying `labels` left behind, unless `keep` says its job still runs.

        Returns the labels of each job whose leftovers were removed, once per job.
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
