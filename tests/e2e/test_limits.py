"""A pusher cannot exhaust the server's disk, memory or workers: real pushes to a real server with
small limits, whose jobs make sparse 10 TB files, print without end, ask for month-long timeouts or
deploy with a script that hangs."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import BUSYBOX, containers_of_job
from tests.support.git import make_repo
from tests.support.server import CiServer
from tests.support.services import redis_database
from tests.support.sse import LogFollower

# One database is enough here: the limits are the engine's and the log writer's, the same whatever the
# database.
ONE_DATABASE = True

LOG_MAX = 64 * 1024
LIMIT = 1024 * 1024  # artifacts and caches
TEN_TB = 10 * 1024**4


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str, e2e_database: str
) -> Iterator[CiServer]:
    root = tmp_path_factory.mktemp("limits")
    limits = {
        "CISERVER_LOG_MAX_BYTES": str(LOG_MAX),
        "CISERVER_ARTIFACT_MAX_BYTES": str(LIMIT),
        "CISERVER_CACHE_MAX_BYTES": str(LIMIT),
        "CISERVER_JOB_TIMEOUT_MAX": "3600",
    }
    # A Redis database of its own: no other test's workers take these jobs with other limits.
    server = CiServer(root, redis_database(redis_url, 11), **limits)
    server.start(workers=2)
    try:
        yield server
    finally:
        server.stop()


def pushed(server: CiServer, tmp_path: Path, pipeline: str) -> tuple[str, dict[str, Any]]:
    """A new project with this pipeline, pushed; its build once it started."""
    name = f"octo/l{tmp_path.name[-20:].replace('_', '-').strip('-')}{time.monotonic_ns() % 10**6}"
    sha = make_repo(tmp_path / "repo", {"pipelines.yml": pipeline})
    server.add_project(name, tmp_path / "repo")
    response = server.push_github(name, sha)
    assert response.status_code == 202, response.text
    return name, server.build(response.json()["build_id"])


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def disk_usage(path: Path) -> int:
    """Bytes the files under `path` take on disk (not their apparent size)."""
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class GrowthWatch(threading.Thread):
    """The most disk a directory took while a test ran, sampled every 50 ms."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.most, self.done = path, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.most = max(self.most, disk_usage(self.path))
            time.sleep(0.05)

    def __enter__(self) -> GrowthWatch:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.join()


def test_a_sparse_10_tb_artifact_fails_the_job_at_once_naming_the_limit(
    server: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  sparse:
    script: [echo small > small.txt, truncate -s {TEN_TB} big]
    artifacts: {{paths: [small.txt, big]}}
"""
    store = server.root / "data" / "artifacts"
    with GrowthWatch(store) as watch:
        _, build = pushed(server, tmp_path, pipeline)
        build = server.wait_build(build["id"], timeout=30)
    job = build["jobs"][0]
    assert (build["status"], job["status"]) == ("failed", "failed"), build
    assert "CISERVER_ARTIFACT_MAX_BYTES" in job["error"] and "'big'" in job["error"], job["error"]
    assert seconds(job["started_at"], job["finished_at"]) < 10, "refused from its size, not after copying"
    assert watch.most <= LIMIT, f"the artifact store grew to {watch.most:,} bytes"
    assert not (store / str(job["id"])).exists(), "nothing partial is left"
    assert server.http.get(f"/api/v1/builds/{build['id']}/artifacts").json() == []
    assert containers_of_job(job["id"], server.root / "data") == []


def test_a_sparse_10_tb_cache_path_is_not_saved_at_once_naming_the_limit(
    server: CiServer, tmp_path: Path
) -> None:
    pipeline = f"""\
image: {BUSYBOX}
jobs:
  sparse:
    script: [mkdir -p deps, truncate -s {TEN_TB} deps/big]
    cache: {{key: deps, paths: [deps]}}
"""
    caches = server.root / "data" / "cache"
    with GrowthWatch(caches) as watch:
        _, build = pushed(server, tmp_path, pipeline)
        build = server.wait_build(build["id"], timeout=30)
    job = build["jobs"][0]
    log = server.log(job["id"])
    assert build["status"] == "success", build  # a cache that cannot be saved is a warning, as in GitLab
    assert "over the limit of 1,048,576 bytes (CISERVER_CACHE_MAX_BYTES); not saved" in log, log
    assert watch.most <= LIMIT, f"the cache dir grew to {watch.most:,} bytes"
    assert not [p for p in caches.rglob("*") if p.is_file()], "no archive, not even a partial one"


def test_a_log_over_the_cap_keeps_its_head_and_tail_and_every_reader_agrees(
    server: CiServer, tmp_path: Path
) -> None:
    loop = 'i=0; while [ $i -lt 30000 ]; do echo "line $i"; i=$((i+1)); done'
    pipeline = f"image: {BUSYBOX}\njobs:\n  chatty:\n    script: ['{loop}', echo the end]\n"
    _, build = pushed(server, tmp_path, pipeline)
    job = server.wait_job_status(build["id"], "chatty", "running")
    follower = LogFollower(server.url, server.token, job["id"])
    follower.start()
    build = server.wait_build(build["id"], timeout=60)
    follower.join(30)
    assert build["status"] == "success", build
    response = server.http.get(f"/api/v1/jobs/{job['id']}/log", params={"offset": 0})
    log = response.text
    assert len(response.content) <= LOG_MAX + 200 and response.headers["X-Log-Offset"] == str(
        len(response.content)
    )
    assert log.startswith("$ i=0") and "\nline 0\nline 1\n" in log, "the head"
    assert log.endswith("line 29999\n$ echo the end\nthe end\n"), "the tail"
    output = "".join(f"line {i}\n" for i in range(30000))
    head, marker_and_tail = log.split("\n[ciserver: ", 1)
    marker, tail = marker_and_tail.split("]\n", 1)
    # The "\n" before the marker is the head's own when its last chunk ended a line, else the writer's.
    cut = len(f"$ {loop}\n{output}$ echo the end\nthe end\n") - len(head) - len(tail)
    assert marker in {
        f"{counted:,} bytes of output cut here: the log keeps the first 32,768 and the last 32,768 "
        "bytes of each attempt (CISERVER_LOG_MAX_BYTES)"
        for counted in (cut - 1, cut)
    }
    assert follower.text == log, "the live stream shows what the log store keeps"
    middle = server.http.get(f"/api/v1/jobs/{job['id']}/log", params={"offset": len(head.encode())})
    assert middle.content == response.content[len(head.encode()) :]


def test_a_job_asking_for_more_than_the_maximum_timeout_ends_the_build_in_error(
    server: CiServer, tmp_path: Path
) -> None:
    jobs = "  ok: {script: [echo]}\n  forever:\n    timeout: 720h\n    script: [echo]\n"
    pipeline = f"image: {BUSYBOX}\njobs:\n{jobs}"
    _, build = pushed(server, tmp_path, pipeline)
    build = server.wait_build(build["id"], timeout=30)
    assert build["status"] == "error" and build["jobs"] == [], build
    assert build["error"] == (
        "pipelines.yml: jobs.forever.timeout: 720h is over this server's maximum of 1h "
        "(CISERVER_JOB_TIMEOUT_MAX)"
    )


SCRIPT_DEPLOY = f"""\
image: {BUSYBOX}
jobs:
  unit: {{script: ["true"]}}
environments:
  cloud:
    auto: true
    timeout: 3s
    script: ['echo deploying; i=0; while [ $i -lt 10000 ]; do echo "noise $i"; i=$((i+1)); done', sleep 600]
"""


def test_a_deploy_script_over_its_timeout_is_stopped_and_the_deployment_fails_saying_so(
    server: CiServer, tmp_path: Path
) -> None:
    name, build = pushed(server, tmp_path, SCRIPT_DEPLOY)
    build = server.wait_build(build["id"])
    assert build["status"] == "success", build
    deadline = time.monotonic() + 60
    latest: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        environments = server.http.get(f"/api/v1/projects/{name}/environments").json()
        latest = environments[0]["latest_deployment"] if environments else None
        if latest and latest["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert latest is not None and latest["status"] == "failed", latest
    assert latest["reason"] == "the deploy script timed out after 3s at step 1"
    step = latest["steps"][0]
    assert len(step["output"]) <= 4000 and step["output"].endswith("noise 9999\n$ sleep 600\n"), step[
        "output"
    ][-200:]
    assert seconds(step["started_at"], step["finished_at"]) < 15
    label = f"label=ciserver.deployment={latest['id']}"
    left = subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True)
    assert left.stdout.split() == []


def test_a_deploy_script_timeout_over_the_maximum_is_refused_at_planning(
    server: CiServer, tmp_path: Path
) -> None:
    _, build = pushed(server, tmp_path, SCRIPT_DEPLOY.replace("timeout: 3s", "timeout: 2h"))
    build = server.wait_build(build["id"], timeout=30)
    assert build["status"] == "error", build
    assert "environments.cloud.timeout: 2h is over this server's maximum of 1h" in build["error"]
