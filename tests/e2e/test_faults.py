"""Faults injected for real: workers killed with SIGKILL or stopped with SIGTERM mid-job, Redis killed
and started again mid-build, the API killed and started again while a client follows a log. Each
test runs its own API, workers and (where it kills it) Redis, all real processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from tests.support.engine import BUSYBOX, containers_of_job
from tests.support.git import commit, make_repo
from tests.support.server import CiServer
from tests.support.services import RedisServer, redis_database
from tests.support.sse import LogFollower

TTL = 3  # CISERVER_WORKER_TTL of these servers: a lost worker is found within seconds

KILLED = f"""\
image: {BUSYBOX}
jobs:
  doomed:
    script: [echo started, sleep 300]
  retried:
    retry: {{max: 1, when: [runner_failure]}}
    script:
      - echo attempt $CI_JOB_ATTEMPT
      - if [ "$CI_JOB_ATTEMPT" = 1 ]; then sleep 300; fi
"""

COUNTING = f"""\
image: {BUSYBOX}
jobs:
  count:
    script: ['for i in $(seq 1 40); do echo line $i; sleep 0.2; done']
"""


@pytest.fixture
def server(tmp_path: Path, redis_url: str, busybox_image: str) -> Iterator[CiServer]:
    """An API and no worker yet, on its own Redis database; each test starts the workers it kills."""
    own_db = redis_database(redis_url, 6)  # its workers see only its own RQ registrations
    Redis.from_url(own_db).flushdb()
    ciserver = CiServer(tmp_path, own_db, CISERVER_WORKER_TTL=str(TTL), CISERVER_STOP_GRACE="3")
    ciserver.start(workers=0)
    try:
        yield ciserver
    finally:
        ciserver.stop()


def register(server: CiServer, tmp_path: Path, pipeline: str) -> tuple[str, str, Path]:
    repo = tmp_path / "repo"
    sha = make_repo(repo, {"pipelines.yml": pipeline})
    server.add_project("octo/faults", repo)
    return "octo/faults", sha, repo


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def containers(server: CiServer, job: dict[str, Any]) -> list[str]:
    return containers_of_job(int(job["id"]), server.data_dir)


def jobs_of(server: CiServer, build_id: int) -> dict[str, dict[str, object]]:
    return {job["name"]: job for job in server.build(build_id)["jobs"]}


def test_jobs_of_a_killed_worker_are_retried_or_ended_and_their_containers_removed(
    server: CiServer, tmp_path: Path
) -> None:
    name, sha, _ = register(server, tmp_path, KILLED)
    victims = [server.start_worker("victim-1"), server.start_worker("victim-2")]
    build_id = server.push_github(name, sha).json()["build_id"]
    doomed = server.wait_job_status(build_id, "doomed", "running")
    retried = server.wait_job_status(build_id, "retried", "running")
    wait_for(lambda: "attempt 1\n" in server.log(int(retried["id"])), 30, "attempt 1 under way")
    wait_for(lambda: "started\n" in server.log(int(doomed["id"])), 30, "the doomed job under way")
    assert containers(server, doomed) and containers(server, retried)
    server.start_worker("rescuer")
    for victim in victims:  # the worker and all it started (RQ's scheduler); not the containers
        os.killpg(victim.pid, signal.SIGKILL)
    killed = time.monotonic()

    build = server.wait_build(build_id, timeout=60)
    found_in = time.monotonic() - killed
    jobs = jobs_of(server, build_id)
    assert jobs["doomed"]["status"] == "error"
    assert str(jobs["doomed"]["error"]).startswith("the worker running it (victim-")
    assert jobs["retried"]["status"] == "success" and jobs["retried"]["attempt"] == 2
    assert build["status"] == "error"
    assert found_in < 6 * TTL, f"the lost worker's jobs were handed on only after {found_in:.1f} s"
    assert containers(server, doomed) == [] and containers(server, retried) == []
    log = server.log(int(retried["id"]))
    assert "attempt 1\n" in log and "was lost; retrying, as its retry policy says" in log
    assert "attempt 2\n" in log
    assert all(job["status"] != "running" for job in jobs.values())


def test_sigterm_lets_a_job_finish_within_the_grace_period_and_takes_no_new_one(
    server: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
stages: [first, second]
jobs:
  short:
    stage: first
    script: [sleep 1, echo finished]
  next:
    stage: second
    script: [echo next]
"""
    name, sha, _ = register(server, tmp_path, pipeline)
    worker = server.start_worker("stopping")
    build_id = server.push_github(name, sha).json()["build_id"]
    server.wait_job_status(build_id, "short", "running")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    jobs = jobs_of(server, build_id)
    assert jobs["short"]["status"] == "success"
    assert "finished" in server.log(int(jobs["short"]["id"]))
    time.sleep(1)
    assert jobs_of(server, build_id)["next"]["status"] == "queued", "a stopping worker took a new job"
    server.start_worker("next")
    assert server.wait_build(build_id)["status"] == "success"


def test_sigterm_hands_a_job_over_its_grace_period_back_to_the_queue(
    server: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  long:
    script:
      - echo attempt $CI_JOB_ATTEMPT
      - if [ "$CI_JOB_ATTEMPT" = 1 ]; then sleep 300; fi
"""
    name, sha, _ = register(server, tmp_path, pipeline)
    worker = server.start_worker("leaving")
    build_id = server.push_github(name, sha).json()["build_id"]
    job = server.wait_job_status(build_id, "long", "running")
    wait_for(lambda: "attempt 1\n" in server.log(int(job["id"])), 30, "the job under way")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0  # its grace is 3 s
    handed = jobs_of(server, build_id)["long"]
    assert (handed["status"], handed["attempt"]) == ("queued", 2)
    assert containers(server, job) == []
    server.start_worker("taker")
    assert server.wait_build(build_id)["status"] == "success"
    log = server.log(int(job["id"]))
    assert "grace period ran out: handed back to the queue" in log and "attempt 2\n" in log


def test_redis_killed_and_restarted_mid_build_loses_no_line_and_no_push(
    tmp_path: Path, busybox_image: str
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    server = CiServer(tmp_path, redis.url, CISERVER_WORKER_TTL=str(TTL))
    try:
        server.start(workers=1)
        name, sha, repo = register(server, tmp_path, COUNTING)
        build_id = server.push_github(name, sha).json()["build_id"]
        job = server.wait_job_status(build_id, "count", "running")
        follower = LogFollower(server.url, server.token, int(job["id"]))
        follower.start()
        wait_for(lambda: "line 5\n" in follower.text, 30, "the first lines streamed")

        redis.kill()
        second = commit(repo, {"README": "while Redis was down\n"}, "second")
        during = server.push_github(name, second)
        assert during.status_code == 202, during.text  # recorded; the outbox enqueues it later
        time.sleep(1.5)
        redis.start()

        follower.join(60)
        assert follower.status == "success"
        assert follower.text == server.log(int(job["id"]))
        assert [ln for ln in follower.text.splitlines() if ln.startswith("line")] == [
            f"line {i}" for i in range(1, 41)
        ]
        assert server.wait_build(build_id)["status"] == "success"
        later = during.json()["build_id"]
        assert server.wait_build(later, timeout=90)["status"] == "success"
        (count,) = server.build(later)["jobs"]
        assert count["attempt"] == 1 and server.log(int(count["id"])).count("line 40\n") == 1
        assert [b["id"] for b in server.builds_of(name)["items"] if b["sha"] == second] == [later]
    finally:
        server.stop()
        redis.kill()


def test_the_api_killed_and_restarted_mid_build_misses_nothing(server: CiServer, tmp_path: Path) -> None:
    name, sha, _ = register(server, tmp_path, COUNTING)
    server.start_worker("steady")
    build_id = server.push_github(name, sha).json()["build_id"]
    job = server.wait_job_status(build_id, "count", "running")
    follower = LogFollower(server.url, server.token, int(job["id"]))
    follower.start()
    wait_for(lambda: "line 5\n" in follower.text, 30, "the first lines streamed")
    assert server.api is not None
    server.api.kill()
    server.api.wait(10)
    time.sleep(1.5)  # the job goes on printing with no API
    server.start_api()

    follower.join(60)
    assert follower.reconnects >= 1
    assert follower.status == "success"
    assert follower.text == server.log(int(job["id"]))
    assert [ln for ln in follower.text.splitlines() if ln.startswith("line")] == [
        f"line {i}" for i in range(1, 41)
    ]
    build = server.wait_build(build_id)
    assert build["status"] == "success" and build["jobs"][0]["status"] == "success"
