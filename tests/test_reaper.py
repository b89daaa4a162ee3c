"""A worker that dies leaves its job's container behind; the next worker to start removes it and
ends the job, so its build can finish (real Docker, Redis and SQLite)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ciserver.config import Settings
from ciserver.store.db import session_scope
from ciserver.store.models import Build, Job, Status
from ciserver.store.projects import add_project
from workers.context import WorkerContext
from workers.reaper import reap_orphans

pytestmark = pytest.mark.e2e


def running_job(settings: Settings) -> int:
    with session_scope(settings.db_url) as session:
        project = add_project(
            session, name="octo/reaped", forge="github", repo_url="https://x.test/r.git", secret="s"
        )
        build = Build(
            project_id=project.id, ref="refs/heads/main", branch="main", sha="a" * 40, status="running"
        )
        session.add(build)
        session.flush()
        job = Job(
            build_id=build.id, position=0, name="slow", stage="test", image="x", script=[], env={},
            timeout=60, after=[], status="running", worker="gone.1",
        )  # fmt: skip
        session.add(job)
        session.flush()
        return job.id


def test_a_container_whose_worker_is_gone_is_removed_and_its_job_ends(
    tmp_path: Path, redis_url: str, busybox_image: str
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    job_id = running_job(settings)
    labels = {
        "ciserver.data_dir": str(settings.data_dir),
        "ciserver.job": str(job_id),
        "ciserver.worker": "gone.1",
    }
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    container = subprocess.run(
        ["docker", "run", "-d", *flags, busybox_image, "sleep", "60"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        assert reap_orphans(WorkerContext(settings)) == [job_id]
        assert subprocess.run(["docker", "inspect", container], capture_output=True).returncode != 0
        with session_scope(settings.db_url) as session:
            job = session.get(Job, job_id)
            assert job is not None
            assert (job.status, job.error) == (Status.error, "the worker running it was lost")
            assert job.build.status == Status.error
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def test_containers_of_another_data_dir_are_left_alone(
    tmp_path: Path, redis_url: str, busybox_image: str
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    other = subprocess.run(
        ["docker", "run", "-d", "--label", "ciserver.data_dir=/elsewhere", "--label", "ciserver.job=1",
         busybox_image, "sleep", "60"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        assert reap_orphans(WorkerContext(settings)) == []
        assert subprocess.run(["docker", "inspect", other], capture_output=True).returncode == 0
    finally:
        subprocess.run(["docker", "rm", "-f", other], capture_output=True)
