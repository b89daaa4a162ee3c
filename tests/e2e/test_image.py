"""The image of ciserver as an operator builds and runs it: built from the top-level Dockerfile on
the tests' local base (wheels from the host, see tests/support/wheelhouse.py), its health check
turns healthy, a token made inside the container opens the API, the server is not root, and a
worker's user reaches the engine's socket through the socket's group alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.engine import PYTHON
from tests.support.wheelhouse import build_wheelhouse

ROOT = Path(__file__).parents[2]
IMAGE = "ciserver-test/ciserver:latest"
SOCKET = Path("/var/run/docker.sock")


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    if subprocess.run(["docker", "image", "inspect", PYTHON], capture_output=True).returncode != 0:
        pytest.fail(f"image {PYTHON} is missing: run scripts/build-test-images")
    context = tmp_path_factory.mktemp("image-context")
    # The checkout as git sees it, uncommitted files included; .dockerignore then does its part.
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, files):
        if (ROOT / name).is_file():  # not a file deleted but not yet committed
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, context / name)
    build_wheelhouse(ROOT, context / "wheelhouse", PYTHON)
    build = subprocess.run(
        ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={PYTHON}", "--build-arg",
         "WHEELHOUSE=wheelhouse", "-t", IMAGE, str(context)],
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the engine's legacy builder (DESIGN.md)
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    return IMAGE


@pytest.fixture
def container(image: str) -> Iterator[str]:
    """The API alone, as the image's default command runs it. Redis is unreachable on purpose: the
    API answers without it, and nothing here queues work."""
    name = docker(
        "run", "-d", "--health-interval", "1s", "-p", "127.0.0.1::8080",
        "-e", "CISERVER_REDIS_URL=redis://127.0.0.1:1/0", image,
    )  # fmt: skip
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)


def health(container: str) -> str:
    return json.loads(docker("inspect", "-f", "{{json .State.Health}}", container))["Status"]


def test_the_image_serves_the_api_healthy_and_unprivileged(container: str) -> None:
    deadline = time.monotonic() + 60
    while health(container) != "healthy" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert health(container) == "healthy", docker("logs", container)

    api = "http://" + docker("port", container, "8080").splitlines()[0]
    assert httpx.get(f"{api}/healthz").json()["status"] == "ok"
    token = docker("exec", container, "ciserver", "token", "create", "--role", "viewer").splitlines()[-1]
    assert httpx.get(f"{api}/api/v1/projects").status_code == 401
    listing = httpx.get(f"{api}/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
    assert listing.status_code == 200 and listing.json() == []

    # The schema's migrations ship in the image: the database the API made is at this release's.
    database, release = docker("exec", container, "ciserver", "db", "current").splitlines()[-2:]
    assert database.split(":")[1] == release.split(":")[1]

    uids = docker("exec", container, "sh", "-c", "grep ^Uid: /proc/1/status").split()[1:]
    assert uids and "0" not in uids  # real, effective, saved and filesystem uid of the server


@pytest.mark.skipif(not SOCKET.is_socket(), reason=f"the engine is not at {SOCKET}")
def test_a_worker_reaches_the_engine_through_the_sockets_group_only(image: str) -> None:
    ping = ["-v", f"{SOCKET}:{SOCKET}", "--entrypoint", "python3", image, "-c",
            "import docker; print(docker.from_env().ping())"]  # fmt: skip
    group = str(SOCKET.stat().st_gid)
    assert docker("run", "--rm", "--no-healthcheck", "--group-add", group, *ping) == "True"
    denied = subprocess.run(
        ["docker", "run", "--rm", "--no-healthcheck", *ping], capture_output=True, text=True
    )
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
