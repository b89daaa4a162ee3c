"""End-to-end tests: real redis-server, Docker Engine, git repositories and ciserver processes (API and
workers). Every test in this folder is marked `e2e` here, so none can forget it and `pytest -m "not e2e"`
runs exactly the fast tests."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import ImageNotFound

from tests.support.engine import BUSYBOX, PYTHON
from tests.support.server import E2E_DATABASE, CiServer
from tests.support.services import RedisServer, redis_database
from workers.executors.docker import DockerExecutor

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


# The databases the tests that run a ciserver run on (unless a test picks its own), e.g.
# CISERVER_TEST_E2E_DATABASES=sqlite,postgresql (scripts/test's default); SQLite alone for a bare pytest.
# A module whose ONE_DATABASE is true tests what no query decides (the engine's isolation, the client's
# HTTP): it runs on the first of them only, unless CISERVER_TEST_E2E_EVERY_MODULE=1.
# A fixture that starts a server for a whole module or session takes `e2e_database` among its
# arguments, even unused: that is what makes pytest start it again for each database.
E2E_DATABASES = os.environ.get("CISERVER_TEST_E2E_DATABASES", "sqlite").split(",")
EVERY_MODULE = os.environ.get("CISERVER_TEST_E2E_EVERY_MODULE") == "1"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    runs_a_server = "ciserver" in metafunc.fixturenames or any(
        name in vars(metafunc.module) for name in ("CiServer", "deploying_server")
    )
    if runs_a_server and "postgres_url" not in metafunc.fixturenames and E2E_DATABASES != ["sqlite"]:
        one = getattr(metafunc.module, "ONE_DATABASE", False) and not EVERY_MODULE
        databases = E2E_DATABASES[:1] if one else E2E_DATABASES
        metafunc.parametrize("e2e_database", databases, indirect=True, scope="session")


@pytest.fixture(scope="session", autouse=True)
def e2e_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which database the servers of the tests now running get (tests.support.server.E2E_DATABASE)."""
    kind = getattr(request, "param", "sqlite")
    E2E_DATABASE.postgres = request.getfixturevalue("postgres") if kind == "postgresql" else None
    try:
        yield kind
    finally:
        E2E_DATABASE.postgres = None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory, e2e_database: str) -> Iterator[str]:
    """A private redis-server for each database's servers: job ids start again on a new database, and
    a Redis that outlived the other database's servers would hand them its old logs and queues."""
    redis = RedisServer(tmp_path_factory.mktemp(f"redis-{e2e_database}")).start()
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
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str, e2e_database: str
) -> Iterator[CiServer]:
    """The API and two workers as real processes, sharing one data dir, database and Redis.

    It lives until the run ends, so it has a Redis database of its own: its workers must not take
    what the fast tests put on database 0's queues to look at."""
    root = tmp_path_factory.mktemp("ciserver")
    server = CiServer(root, redis_database(redis_url, 1))
    server.start(workers=2)
    try:
        yield server
    finally:
        server.stop()


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
