"""Helpers for the tests that drive the Docker executor and the image builder on the real engine."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import docker

from tests.support.engine import BUSYBOX
from workers.executors.base import ImageBuildSpec, JobSpec
from workers.executors.docker import DockerExecutor


def job_id() -> int:
    """Far above the ids of any database a concurrent test run creates, so container names never clash."""
    return random.randrange(10**9, 2 * 10**9)


def job(workspace: Path, labels: dict[str, str], *script: str, **changes: object) -> JobSpec:
    workspace.mkdir(parents=True, exist_ok=True)
    fields: dict[str, object] = {
        "job_id": job_id(),
        "name": "test",
        "image": BUSYBOX,
        "script": script,
        "env": {},
        "workspace": workspace,
        "labels": {**labels, "ciserver.job": "test"},
    }
    fields.update(changes)
    return JobSpec(**fields)  # type: ignore[arg-type]


def run(
    executor: DockerExecutor,
    spec: JobSpec,
    stop: threading.Event | None = None,
    seen: Callable[[bytes], None] | None = None,
) -> tuple[int, str, float]:
    """Exit code, output and seconds taken; `seen` is shown the output so far as each chunk comes."""
    chunks: list[bytes] = []

    def sink(chunk: bytes) -> None:
        chunks.append(chunk)
        if seen is not None:
            seen(b"".join(chunks))

    started = time.monotonic()
    code = executor.run(spec, sink, stop or threading.Event()).exit_code
    return code, b"".join(chunks).decode(errors="replace"), time.monotonic() - started


def assert_nothing_left(client: docker.DockerClient, labels: dict[str, str]) -> None:
    filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
    assert client.containers.list(all=True, filters=filters) == []
    assert client.networks.list(filters=filters) == []


def build_spec(workspace: Path, labels: dict[str, str], tag: str, **changes: object) -> ImageBuildSpec:
    """A build of the Dockerfile at the top of `workspace`, the whole workspace its context."""
    fields: dict[str, object] = {
        "job_id": job_id(),
        "workspace": workspace,
        "context": ".",
        "dockerfile": "Dockerfile",
        "tag": tag,
        "labels": labels,
    }
    fields.update(changes)
    return ImageBuildSpec(**fields)  # type: ignore[arg-type]


def write_context(path: Path, dockerfile: str, **files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path
