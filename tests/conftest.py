"""Shared fixtures: a real redis-server, a real Docker Engine, real git repositories, and a real
ciserver (API and worker processes) for the end-to-end tests."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound
from redis import Redis

from ciserver.ports import free_port
from tests.support.engine import BUSYBOX, PYTHON
from tests.support.server import CiServer
from workers.executors.docker import DockerExecutor


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the whole run."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except Exception:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def busybox_image() -> str:
    if subprocess.run(["docker", "image", "inspect", BUSYBOX], capture_output=True).returncode != 0:
        pytest.fail(f"image {BUSYBOX} is missing: run scripts/build-test-images")
    return BUSYBOX


@pytest.fixture(scope="session")
def ciserver(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str
) -> Iterator[CiServer]:
    """The API and two workers as real processes, sharing one data dir, database and Redis."""
    root = tmp_path_factory.mktemp("ciserver")
    server = CiServer(root, redis_url)
    server.start(workers=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo"


# The Docker Engine, for the executor's and the image builder's tests.


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    engine = docker.from_env()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def test_images(busybox_image: str, client: docker.DockerClient) -> None:
    """Fail at once, with the way out, when the locally built test images are missing."""
    try:
        client.images.get(PYTHON)
    except ImageNotFound:
        pytest.fail(f"image {PYTHON} is missing: run scripts/build-test-images")


@pytest.fixture
def executor(client: docker.DockerClient) -> DockerExecutor:
    return DockerExecutor(client, pull=False)


@pytest.fixture
def labels(executor: DockerExecutor) -> Iterator[dict[str, str]]:
    """This test's own label; whatever a failing test left is removed afterwards."""
    mine = {"ciserver.test": f"executor-{uuid.uuid4().hex[:12]}"}
    yield mine
    executor.remove_leftovers(mine, keep=lambda _: False)


@pytest.fixture
def image_tags(client: docker.DockerClient) -> Iterator[list[str]]:
    """Tags of images a test builds, removed with their intermediate layers afterwards."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        try:
            client.images.remove(tag, force=True)
        except ImageNotFound:
            pass
