"""Shared fixtures: a real redis-server, a real Docker Engine, real git repositories, and a real
ciserver (API and worker processes) for the end-to-end tests."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound

from tests.support.engine import BUSYBOX, PYTHON
from tests.support.server import CiServer
from tests.support.services import RedisServer
from workers.executors.docker import DockerExecutor


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the whole run."""
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield redis.url
    finally:
        redis.stop()


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
