"""Faults under a worker: the Docker Engine unreachable for a moment (its socket relayed through one
a test takes away), a log store that cannot write (a full device, a write cut short), and a job row
whose options it cannot read. Jobs run through the worker's own entry points, with real git,
Docker, Redis and SQLite."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from ciserver.config import Settings, get_settings
from ciserver.logs import FileLogStore
from ciserver.store.db import session_scope
from ciserver.store.models import Build, Job
from ciserver.store.projects import add_project
from tests.support.engine import BUSYBOX, containers_of_job
from tests.support.git import make_repo
from tests.support.proxy import EngineProxy
from tests.support.services import redis_database
from tests.support.store import fernet_of
from workers.context import current
from workers.tasks import run_build, run_job


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The settings `ciserver worker` would read, on a Redis database of this test's own."""
    own_db = redis_database(redis_url, 7)
    Redis.from_url(own_db).flushdb()
    monkeypatch.setenv("CISERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CISERVER_REDIS_URL", own_db)
    monkeypatch.setenv("CISERVER_ALLOW_LOCAL_REPOS", "true")
    get_settings.cache_clear()
    current.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    current.cache_clear()


def planned(settings: Settings, tmp_path: Path, pipeline: str) -> dict[str, int]:
    """A push planned by the worker's run_build; returns its job ids by name."""
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"pipelines.yml": pipeline})
    with session_scope(settings.db_url) as session:
        project = add_project(
            session,
            name="octo/faults",
            forge="github",
            repo_url=str(repo),
            secret="s",
            fernet=fernet_of(session),
        )
        build = Build(project_id=project.id, ref="refs/heads/main", branch="main", sha=sha, status="queued")
        session.add(build)
        session.flush()
        build_id = build.id
    run_build(build_id)
    return {job.name: job.id for job in jobs(settings, build_id)}


def jobs(settings: Settings, build_id: int = 1) -> list[Job]:
    with session_scope(settings.db_url) as session:
        rows = list(session.query(Job).filter(Job.build_id == build_id).order_by(Job.position))
        session.expunge_all()
        return rows


def job(settings: Settings, job_id: int) -> Job:
    (row,) = [row for row in jobs(settings) if row.id == job_id]
    return row


def test_an_engine_unreachable_for_a_moment_is_an_error_retried_as_the_policy_says(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busybox_image: str
) -> None:
    proxy = EngineProxy(tmp_path / "engine.sock")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy.path}")
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  patient:
    retry: {{max: 1, when: [runner_failure]}}
    script: [echo attempt $CI_JOB_ATTEMPT]
  plain:
    script: [echo never]
"""
    ids = planned(settings, tmp_path, pipeline)
    run_job(ids["patient"])  # the engine's socket is not there
    run_job(ids["plain"])
    plain = job(settings, ids["plain"])
    assert plain.status == "error"
    assert str(plain.error).startswith("the Docker Engine is unreachable: ")
    patient = job(settings, ids["patient"])
    assert (patient.status, patient.attempt) == ("queued", 2)

    proxy.up()
    try:
        run_job(ids["patient"])
    finally:
        proxy.down()
    patient = job(settings, ids["patient"])
    assert (patient.status, patient.attempt) == ("success", 2)
    log = FileLogStore(settings.logs_dir).read(ids["patient"]).decode()
    assert "attempt 1 ended error (the Docker Engine is unreachable: " in log and "attempt 2\n" in log


def test_a_log_store_that_cannot_write_ends_the_job_in_error_and_leaves_no_container(
    settings: Settings, tmp_path: Path, busybox_image: str
) -> None:
    ids = planned(
        settings, tmp_path, f"image: {BUSYBOX}\njobs:\n  noisy:\n    script: [echo hello, sleep 30]\n"
    )
    path = FileLogStore(settings.logs_dir).path(ids["noisy"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    run_job(ids["noisy"])
    noisy = job(settings, ids["noisy"])
    assert noisy.status == "error"
    assert str(noisy.error).startswith("the log store could not keep the output: No space left on device")
    assert containers_of_job(ids["noisy"], settings.data_dir) == []
    with session_scope(settings.db_url) as session:
        build = session.get(Build, noisy.build_id)
        assert build is not None and build.status == "error"


def test_a_job_whose_stored_options_do_not_read_back_ends_in_error_naming_the_key(
    settings: Settings, tmp_path: Path
) -> None:
    ids = planned(settings, tmp_path, f"image: {BUSYBOX}\njobs:\n  old:\n    retry: 2\n    script: [x]\n")
    with session_scope(settings.db_url) as session:
        row = session.get(Job, ids["old"])
        assert row is not None
        row.options = {"retry": {"max": 2, "when": ["always"]}, "resources": {"memory": "lots"}}
    run_job(ids["old"])
    old = job(settings, ids["old"])
    message = "the job's stored options cannot be read: options.resources.memory: invalid size 'lots'"
    assert (old.status, old.attempt) == ("error", 1)
    assert str(old.error).startswith(message)
    assert f"ciserver: {message}" in FileLogStore(settings.logs_dir).read(ids["old"]).decode()
    with session_scope(settings.db_url) as session:
        build = session.get(Build, old.build_id)
        assert build is not None and build.status == "error"


SHORT_WRITE = """\
import resource, signal, sys
from pathlib import Path
from ciserver.logs import FileLogStore, LogStoreError, LogWriter

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
store = FileLogStore(Path(sys.argv[1]))
writer = LogWriter(store, None, 7)
writer.write(b"a" * 59 + b"\\n")
resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    writer.write(b"b" * 59 + b"\\n")  # would end at byte 120: the kernel writes 40 bytes of it
except LogStoreError as exc:
    print(exc)
writer.write(b"c\\n")  # nothing more is kept once the store failed
print(writer.store_error is not None)
"""


def test_a_write_cut_short_is_taken_back_so_the_log_holds_only_whole_chunks(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SHORT_WRITE, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("the log store could not keep the output: No space left on device")
    assert result.stdout.endswith("True\n")
    assert FileLogStore(tmp_path).read(7) == b"a" * 59 + b"\n"
