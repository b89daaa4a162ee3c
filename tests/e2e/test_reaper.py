"""The reaper hands on the work of workers that are gone: their containers removed, their jobs
retried or ended, their unplanned builds queued again; the work of live workers is left alone
(real Docker, Redis, RQ registrations and SQLite; the killed-process version is in test_faults)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker

from ciserver import queue
from ciserver.config import Settings
from ciserver.states import Status
from ciserver.store.db import session_scope
from ciserver.store.models import Build, Job, utcnow
from ciserver.store.projects import add_project
from tests.support.services import redis_database
from tests.support.store import fernet_of
from workers.context import WorkerContext
from workers.reaper import Reaper

TTL = 3


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Iterator[Settings]:
    own_db = redis_database(redis_url, 8)  # no other test's worker takes what is enqueued here
    redis = Redis.from_url(own_db)
    redis.flushdb()
    while int(redis.info("server")["uptime_in_seconds"]) < TTL:  # the reaper judges no one before
        time.sleep(0.2)
    yield Settings(data_dir=tmp_path, redis_url=own_db, worker_ttl=TTL)


def running_build(settings: Settings, *, jobs: dict[str, dict[str, object]]) -> list[int]:
    """A running build whose jobs (name -> options) run on the worker each names."""
    with session_scope(settings.db_url) as session:
        project = add_project(
            session,
            name="octo/reaped",
            forge="github",
            repo_url="https://x.test/r.git",
            secret="s",
            fernet=fernet_of(session),
        )
        build = Build(
            project_id=project.id, ref="refs/heads/main", branch="main", sha="a" * 40, status="running"
        )
        session.add(build)
        session.flush()
        rows = [
            Job(
                build_id=build.id,
                position=n,
                name=name,
                stage="test",
                image="x",
                script=[],
                env={},
                timeout=60,
                after=[],
                status="running",
                worker=str(options.pop("worker")),
                options=options,
            )
            for n, (name, options) in enumerate(jobs.items())
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def job_row(settings: Settings, job_id: int) -> Job:
    with session_scope(settings.db_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def container_of(settings: Settings, job_id: int, worker: str, image: str) -> str:
    labels = {
        "ciserver.data_dir": str(settings.data_dir),
        "ciserver.job": str(job_id),
        "ciserver.worker": worker,
    }
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    return subprocess.run(
        ["docker", "run", "-d", *flags, image, "sleep", "60"], check=True, capture_output=True, text=True
    ).stdout.strip()


def exists(container: str) -> bool:
    return subprocess.run(["docker", "inspect", container], capture_output=True).returncode == 0


def test_a_gone_workers_container_is_removed_and_its_job_ends_or_is_retried(
    settings: Settings, busybox_image: str
) -> None:
    retry = {"retry": {"max": 1, "when": ["runner_failure"]}}
    lost, retried = running_build(
        settings, jobs={"lost": {"worker": "gone.1"}, "retried": {"worker": "gone.2", **retry}}
    )
    container = container_of(settings, lost, "gone.1", busybox_image)
    try:
        Reaper(WorkerContext(settings)).run_once()
        assert not exists(container)
        job = job_row(settings, lost)
        assert (job.status, job.error) == (Status.error, "the worker running it (gone.1) was lost")
        again = job_row(settings, retried)
        assert (again.status, again.attempt, again.worker) == (Status.queued, 2, None)
        redis = Redis.from_url(settings.redis_url or "")
        assert redis.hget(f"rq:job:{queue.job_job_id(retried, 2)}", "status") == b"queued"
        log = (settings.logs_dir / "0" / f"{lost}.log").read_text()
        assert "ciserver: the worker running it (gone.1) was lost" in log
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def test_the_work_of_a_live_worker_is_left_alone(settings: Settings, busybox_image: str) -> None:
    redis = Redis.from_url(settings.redis_url or "")
    live = Worker([Queue(queue.JOBS, connection=redis)], name="alive.1", connection=redis)
    live.register_birth()
    (job_id,) = running_build(settings, jobs={"busy": {"worker": "alive.1"}})
    container = container_of(settings, job_id, "alive.1", busybox_image)
    try:
        Reaper(WorkerContext(settings)).run_once()
        assert exists(container)
        assert job_row(settings, job_id).status == Status.running
    finally:
        live.register_death()
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def test_a_deployed_service_is_never_taken_for_a_lost_jobs_container(
    settings: Settings, busybox_image: str
) -> None:
    # Its image was built by a job, whose labels it carries; the deploy label says what it is.
    (job_id,) = running_build(settings, jobs={"built": {"worker": "gone.3"}})
    labels = {"ciserver.data_dir": str(settings.data_dir), "ciserver.job": str(job_id),
              "ciserver.worker": "gone.3", "ciserver.deploy": str(settings.data_dir)}  # fmt: skip
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    service = subprocess.run(
        ["docker", "run", "-d", *flags, busybox_image, "sleep", "60"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        Reaper(WorkerContext(settings)).run_once()
        assert exists(service)
    finally:
        subprocess.run(["docker", "rm", "-f", service], capture_output=True)


def test_no_one_is_judged_before_redis_has_been_up_a_whole_ttl(settings: Settings) -> None:
    # As after a Redis restart that lost the registry: live workers register at their next heartbeat.
    patient = settings.model_copy(update={"worker_ttl": 10**6})
    (job_id,) = running_build(settings, jobs={"busy": {"worker": "not-registered-yet.1"}})
    Reaper(WorkerContext(patient)).run_once()
    assert job_row(settings, job_id).status == Status.running


def test_a_build_whose_planning_was_lost_is_queued_again(settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        project = add_project(
            session,
            name="octo/planned",
            forge="github",
            repo_url="https://x.test/r.git",
            secret="s",
            fernet=fernet_of(session),
        )
        build = Build(
            project_id=project.id, ref="refs/heads/main", branch="main", sha="b" * 40, status="running",
            started_at=utcnow() - timedelta(seconds=TTL + 1),
        )  # fmt: skip
        session.add(build)
        session.flush()
        build_id = build.id
    Reaper(WorkerContext(settings)).run_once()  # no RQ task runs it: its worker died while planning
    with session_scope(settings.db_url) as session:
        row = session.get(Build, build_id)
        assert row is not None
        assert (row.status, row.started_at) == (Status.queued, None)


def test_containers_of_another_data_dir_are_left_alone(settings: Settings, busybox_image: str) -> None:
    other = subprocess.run(
        ["docker", "run", "-d", "--label", "ciserver.data_dir=/elsewhere", "--label", "ciserver.job=1",
         busybox_image, "sleep", "60"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        Reaper(WorkerContext(settings)).run_once()
        assert exists(other)
    finally:
        subprocess.run(["docker", "rm", "-f", other], capture_output=True)
