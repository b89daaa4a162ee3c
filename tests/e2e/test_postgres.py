"""The server on PostgreSQL: a push to green with its log, through real API and worker processes whose
only database is PostgreSQL, and the project's limit held by two workers taking jobs at once."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import select

from ciserver.store.db import session_scope
from ciserver.store.models import Build
from tests.e2e.test_push_to_green import TWO_STAGES, registered
from tests.support.engine import BUSYBOX
from tests.support.server import CiServer
from tests.support.services import redis_database

FAN_OUT = f"""\
image: {BUSYBOX}
jobs:
  one: {{script: [sleep 1]}}
  two: {{script: [sleep 1]}}
  three: {{script: [sleep 1]}}
"""


@pytest.fixture
def server(tmp_path: Path, redis_url: str, postgres_url: str, busybox_image: str) -> Iterator[CiServer]:
    """The API and two workers on PostgreSQL, one job of a project at a time."""
    server = CiServer(
        tmp_path, redis_database(redis_url, 13),
        CISERVER_DATABASE_URL=postgres_url, CISERVER_PROJECT_CONCURRENCY="1",
    )  # fmt: skip
    server.start(workers=2)
    try:
        yield server
    finally:
        server.stop()


def test_a_push_builds_green_on_postgresql_and_jobs_keep_to_the_limit(
    server: CiServer, postgres_url: str, tmp_path: Path
) -> None:
    name, sha, _ = registered(server, tmp_path / "green", TWO_STAGES)
    build = server.wait_build(server.push_github(name, sha).json()["build_id"])
    assert build["status"] == "success", build
    assert f"hello from {name} at {sha} on main" in server.log(build["jobs"][0]["id"])
    with session_scope(postgres_url) as session:
        assert session.scalar(select(Build.sha).where(Build.id == build["id"])) == sha
    assert not (tmp_path / "data" / "ciserver.db").exists(), "no SQLite database beside it"

    name, sha, _ = registered(server, tmp_path / "fan-out", FAN_OUT)
    build = server.wait_build(server.push_github(name, sha).json()["build_id"], timeout=60)
    assert build["status"] == "success", build
    spans = sorted((job["started_at"], job["finished_at"]) for job in build["jobs"])
    assert all(ended <= started for (_, ended), (started, _) in pairwise(spans)), spans
