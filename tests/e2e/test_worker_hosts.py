"""Workers on other hosts: the API and two worker "hosts", each with a data dir of its own, sharing
nothing but PostgreSQL, Redis and the API's address (CISERVER_BLOB_STORE=database). A job on one host
gets the artifact a job on the other kept, a later build restores the cache the first host saved, and
the API serves every log though no log file exists anywhere."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from ciserver.store.db import session_scope
from ciserver.store.models import Job
from tests.e2e.test_push_to_green import registered
from tests.support.engine import BUSYBOX
from tests.support.git import commit
from tests.support.server import CiServer
from tests.support.services import redis_database

PIPELINE = f"""\
image: {BUSYBOX}
stages: [make, use]
jobs:
  make:
    stage: make
    script:
      - if [ -f .deps/made ]; then echo "cache from $(cat .deps/made)"; fi
      - mkdir -p dist .deps && echo "built at $CI_COMMIT_SHA" > dist/app.txt
      - echo "build $CI_BUILD_ID" > .deps/made
      - sleep 2
    artifacts: {{paths: [dist/]}}
    cache: {{key: deps, paths: [.deps]}}
  use:
    stage: use
    script: [cat dist/app.txt]
"""


@pytest.fixture
def api(tmp_path: Path, redis_url: str, postgres_url: str, busybox_image: str) -> Iterator[CiServer]:
    """The API alone on its host; the test starts the workers, each with a data dir of its own."""
    server = CiServer(
        tmp_path / "api", redis_database(redis_url, 14),
        CISERVER_DATABASE_URL=postgres_url, CISERVER_BLOB_STORE="database", CISERVER_STOP_GRACE="60",
        CISERVER_SECRET_KEY=Fernet.generate_key().decode(),  # every host the same key, as the README says
    )  # fmt: skip
    (tmp_path / "api").mkdir()
    server.start(workers=0)
    try:
        yield server
    finally:
        server.stop()


def workers_of(postgres_url: str, build_id: int) -> dict[str, str]:
    with session_scope(postgres_url) as session:
        rows = session.execute(select(Job.name, Job.worker).where(Job.build_id == build_id))
        return {name: (worker or "").rsplit(".", 1)[0] for name, worker in rows}


def test_a_job_on_one_host_gets_the_artifact_and_cache_another_host_kept(
    api: CiServer, tmp_path: Path, postgres_url: str
) -> None:
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    name, sha, repo = registered(api, tmp_path / "project", PIPELINE)
    worker_a = api.start_worker("host-a", CISERVER_DATA_DIR=str(host_a / "data"))
    build_id = api.push_github(name, sha).json()["build_id"]
    api.wait_job_status(build_id, "make", "running", timeout=60)
    worker_a.send_signal(signal.SIGTERM)  # host A finishes `make`, then takes nothing more
    assert worker_a.wait(60) == 0
    api.start_worker("host-b", CISERVER_DATA_DIR=str(host_b / "data"))
    build = api.wait_build(build_id, timeout=90)
    assert build["status"] == "success", [(j["name"], j["status"], j["error"]) for j in build["jobs"]]
    assert workers_of(postgres_url, build_id) == {"make": "host-a", "use": "host-b"}
    make, use = build["jobs"]
    assert f"built at {sha}" in api.log(use["id"]), "host B placed the artifact host A kept"
    assert "cache: saved" in api.log(make["id"])
    [artifact] = api.http.get(f"/api/v1/builds/{build_id}/artifacts").json()
    download = api.http.get(f"/api/v1/artifacts/{artifact['id']}")
    assert download.status_code == 200 and download.content == f"built at {sha}\n".encode()
    assert download.headers["x-checksum-sha256"] == artifact["sha256"]

    second = commit(repo, {"README": "again\n"}, "again")
    later = api.wait_build(api.push_github(name, second, before=sha).json()["build_id"], timeout=90)
    assert later["status"] == "success", [(j["name"], j["status"], j["error"]) for j in later["jobs"]]
    assert workers_of(postgres_url, later["id"]) == {"make": "host-b", "use": "host-b"}
    assert f"cache from build {build_id}" in api.log(later["jobs"][0]["id"]), "host B restored A's cache"

    for data in (tmp_path / "api" / "data", host_a / "data", host_b / "data"):
        kept = [p for sub in ("logs", "artifacts", "cache") for p in (data / sub).rglob("*") if p.is_file()]
        assert kept == [], f"{data} holds {kept}: nothing is kept on a host"
