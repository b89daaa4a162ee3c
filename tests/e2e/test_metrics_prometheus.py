"""An operator's view of a real server: a real Prometheus (Debian's `prometheus`, run here on loopback
with its own configuration and storage) scrapes `ciserver serve` with a viewer token after a real
push went green, and answers queries about it; the API and the workers write JSON lines that carry
the request and the job they were written for, under `serve` and `worker` as under `up`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciserver.ports import free_port
from tests.support.git import make_repo
from tests.support.pipelines import HELLO_THEN_PACKAGE
from tests.support.server import CiServer
from tests.support.services import RedisServer

PIPELINE = HELLO_THEN_PACKAGE


class Prometheus:
    """`prometheus` scraping one target every second, on a free loopback port, storing under `root`."""

    def __init__(self, root: Path, target: str, token: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (apt-get install prometheus)")
        root.mkdir(parents=True, exist_ok=True)
        (root / "token").write_text(token)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "ciserver",
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "authorization": {"credentials_file": str(root / "token")},
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = root / "prometheus.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                    f"--storage.tsdb.path={root / 'data'}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus was not ready within 30 s: {self.log.read_text()}")

    def query(self, expression: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def wait_value(self, expression: str, expected: float, timeout: float = 30) -> list[dict[str, Any]]:
        """The query's result once its one series has `expected` as its value."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expression)
            if len(result) == 1 and float(result[0]["value"][1]) == expected:
                return result
            time.sleep(0.5)
        targets = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()
        raise AssertionError(f"{expression} never became {expected}: {result}; targets: {targets}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: str, e2e_database: str
) -> Iterator[CiServer]:
    """A server of its own (database and Redis), so that its counts are this module's pushes alone,
    writing its process logs as JSON lines."""
    root = tmp_path_factory.mktemp("metrics")
    redis = RedisServer(root / "redis").start()
    server = CiServer(root, redis.url, CISERVER_LOG_FORMAT="json")
    try:
        server.start(workers=1)
        yield server
    finally:
        server.stop()
        redis.stop()


@pytest.fixture(scope="module")
def green_build(server: CiServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    name = f"octo/m{uuid.uuid4().hex[:10]}"
    repo = tmp_path_factory.mktemp("repo") / "repo"
    sha = make_repo(repo, {"pipelines.yml": PIPELINE})
    server.add_project(name, repo)
    response = server.push_github(name, sha)
    assert response.status_code == 202, response.text
    build = server.wait_build(response.json()["build_id"])
    assert build["status"] == "success", build
    return build


def test_prometheus_scrapes_the_green_build_with_a_viewer_token(
    server: CiServer, green_build: dict[str, Any], tmp_path: Path
) -> None:
    prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{server.port}", server.token_for("viewer"))
    try:
        prometheus.wait_value('up{job="ciserver"}', 1)
        prometheus.wait_value('ciserver_builds{status="success"}', 1)
        prometheus.wait_value('ciserver_jobs{status="success"}', 2)
        prometheus.wait_value('ciserver_job_duration_seconds_count{status="success"}', 2)
        prometheus.wait_value('ciserver_webhook_deliveries_total{forge="github",status="202"}', 1)
        prometheus.wait_value('ciserver_workers{queue="jobs"}', 1)
        prometheus.wait_value('ciserver_queue_depth{queue="builds"}', 0)
        # The build took well under a minute: the bucket at 60 s holds it.
        prometheus.wait_value('ciserver_build_duration_seconds_bucket{status="success",le="60.0"}', 1)
        for expression in _documented_queries():
            prometheus.query(expression)  # each one the operations page shows is valid PromQL
    finally:
        prometheus.stop()


def _documented_queries() -> list[str]:
    page = (Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md").read_text()
    block = page.split("```promql\n", 1)[1].split("```", 1)[0]
    queries = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    assert len(queries) >= 5, block
    return [query for query in queries if query]


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """Every whole line of a process log, each of which must be a JSON object (the last line may be
    still being written)."""
    text = path.read_text()
    lines = text[: text.rfind("\n") + 1].splitlines()
    parsed = [json.loads(line) for line in lines if line.strip()]
    assert len(parsed) == len([line for line in lines if line.strip()])  # every line is an object
    return parsed


def test_the_worker_logs_each_job_as_json_lines_carrying_its_job_id(
    server: CiServer, green_build: dict[str, Any]
) -> None:
    lines = _json_lines(server.root / "test-worker-1.log")
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    for job in green_build["jobs"]:
        mine = [line for line in lines if line.get("job_id") == job["id"]]
        assert any(f"job {job['id']}: attempt 1 ended success" in line["message"] for line in mine), mine
    planned = [line for line in lines if line.get("build_id") == green_build["id"]]
    assert planned, "the line of the build's planning task carries its build_id"


def test_the_api_echoes_the_request_id_and_logs_the_request_under_it(server: CiServer) -> None:
    request_id = f"probe-{uuid.uuid4().hex}"
    answer = server.http.get("/api/v1/builds", headers={"X-Request-ID": request_id})
    assert answer.headers["X-Request-ID"] == request_id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = _json_lines(server.root / "api.log")
        access = [line for line in lines if line.get("request_id") == request_id]
        if access:
            break
        time.sleep(0.1)
    assert access and access[0]["logger"] == "uvicorn.access", access
    assert "GET /api/v1/builds" in access[0]["message"]


def test_up_hands_the_json_format_to_its_api_and_workers(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CISERVER_")}
    env.update(CISERVER_DATA_DIR=str(data), CISERVER_LOG_FORMAT="json")
    up = subprocess.Popen(
        [sys.executable, "-m", "ciserver", "up", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    logs = data / "process-logs"
    try:
        request_id = f"up-{uuid.uuid4().hex}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Request-ID": request_id})
                worker = logs / "worker-1.log"
                if worker.exists() and "Listening on" in worker.read_text():
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        api_lines, worker_lines = _json_lines(logs / "api.log"), _json_lines(logs / "worker-1.log")
        assert any(line.get("request_id") == request_id for line in api_lines), api_lines
        assert any(line["logger"] == "rq.worker" for line in worker_lines), worker_lines
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
