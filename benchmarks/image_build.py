#!/usr/bin/env python3
"""Image builds, measured: ciserver's builder (each RUN in a container hardened as a job, see
workers/executors/docker_build.py) against the engine's classic builder (`DOCKER_BUILDKIT=0
docker build`), which ciserver used before, on the same Dockerfiles.

Prints a table: for each Dockerfile, the median time of a build with nothing cached ("cold") and of
the same build again with its steps cached ("warm"), for both builders. The Dockerfiles are the
sample service (examples/hello) and one of several RUN and COPY steps. From the project root, once
`scripts/build-test-images` has run:

    .venv/bin/python benchmarks/image_build.py [--runs 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from workers.executors.base import BuildCache, ImageBuildSpec, Limits  # noqa: E402
from workers.executors.docker_build import ImageBuilder  # noqa: E402

STEPS = """\
FROM ciserver-test/python:3.11
ARG VERSION=dev
ENV VERSION=${VERSION} PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY requirements.txt .
RUN python3 -c "print('installing', open('requirements.txt').read().split())"
COPY src/ src/
RUN python3 -m compileall -q src
RUN useradd --system --uid 999 app
USER app
EXPOSE 8000
CMD ["python3", "-m", "http.server", "8000"]
"""


def workspaces(root: Path) -> dict[str, Path]:
    hello = root / "hello"
    shutil.copytree(ROOT / "examples" / "hello", hello)
    steps = root / "steps"
    (steps / "src").mkdir(parents=True)
    (steps / "Dockerfile").write_text(STEPS)
    (steps / "requirements.txt").write_text("flask\nrequests\n")
    for n in range(20):
        (steps / "src" / f"module{n}.py").write_text(f"VALUE = {n}\n" * 50)
    return {"examples/hello": hello, "several RUN and COPY steps": steps}


def ours(workspace: Path, cache: Path, client: docker.DockerClient) -> float:
    spec = ImageBuildSpec(
        job_id=1,
        workspace=workspace,
        context=".",
        dockerfile="Dockerfile",
        tag=f"ciserver-bench/build:{uuid.uuid4().hex[:12]}",
        build_args={"VERSION": "bench"},
        labels={"ciserver.bench": "image_build"},
        limits=Limits(memory=2 * 1024**3, cpus=2, pids=1024),
        cache=BuildCache(read=(cache,), write=cache),
    )
    started = time.monotonic()
    ImageBuilder(client, pull=False).build(spec, lambda _: None, threading.Event())
    return time.monotonic() - started


def classic(workspace: Path, cached: bool) -> float:
    argv = ["docker", "build", "-q", "--build-arg", "VERSION=bench", "-t", "ciserver-bench/classic", "."]
    if not cached:
        argv.insert(2, "--no-cache")
    started = time.monotonic()
    subprocess.run(argv, cwd=workspace, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"},
                   check=True, capture_output=True)  # fmt: skip
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    client = docker.from_env()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, workspace in workspaces(Path(scratch)).items():
            times: dict[str, list[float]] = {
                "ours cold": [],
                "ours warm": [],
                "classic cold": [],
                "classic warm": [],
            }
            for _ in range(runs):
                cache = Path(scratch) / "cache" / uuid.uuid4().hex
                times["ours cold"].append(ours(workspace, cache, client))
                times["ours warm"].append(ours(workspace, cache, client))
                times["classic cold"].append(classic(workspace, cached=False))
                times["classic warm"].append(classic(workspace, cached=True))
            rows.append((name, {key: statistics.median(values) for key, values in times.items()}))
    print(f"{runs} runs each, medians")
    print("| Dockerfile | classic, cold | ciserver, cold | classic, warm | ciserver, warm |")
    print("|---|---|---|---|---|")
    for name, median in rows:
        print(
            f"| {name} | {median['classic cold']:.2f} s | {median['ours cold']:.2f} s "
            f"| {median['classic warm']:.2f} s | {median['ours warm']:.2f} s |"
        )
    for image in client.images.list(name="ciserver-bench/*"):
        for tag in image.tags:
            client.images.remove(tag, force=True)


if __name__ == "__main__":
    main()
