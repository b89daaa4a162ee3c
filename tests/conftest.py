"""Shared fixtures: a real redis-server, a real Docker Engine, real git repositories, and a real
ciserver (API and worker processes) for the end-to-end tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.helpers import BUSYBOX, CiServer, free_port


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
