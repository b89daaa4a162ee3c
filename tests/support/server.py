"""A ciserver run as real processes (`ciserver serve` and `ciserver worker`), driven over HTTP and the
CLI as a person or a forge would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from ciserver.ports import free_port
from tests.support.payloads import (
    WEBHOOK_SECRET,
    github_headers,
    github_push_body,
    gitlab_headers,
    gitlab_push_body,
)
from tests.support.postgres import PostgresServer
from tests.support.services import start_nginx

FINAL = ("success", "failed", "error", "canceled", "skipped")


@dataclass
class E2eDatabase:
    """The database the end-to-end servers get when a test gives none: SQLite in the data dir, or a new
    PostgreSQL database of this server's (tests/e2e/conftest.py runs the server tests on each)."""

    postgres: PostgresServer | None = None


E2E_DATABASE = E2eDatabase()


class CiServer:
    """`ciserver serve` and `ciserver worker` processes on one data dir, driven over HTTP and the CLI."""

    def __init__(self, root: Path, redis_url: str, **env: str) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            CISERVER_DATA_DIR=str(root / "data"),
            CISERVER_REDIS_URL=redis_url,
            CISERVER_ALLOW_LOCAL_REPOS="true",
            CISERVER_OUTBOX_INTERVAL="0.5",
            # No nginx for these servers: a deployment fails at once and cleanly (test_deployments
            # starts one and sets the real command).
            CISERVER_ROUTER_RELOAD="false",
            **env,
        )
        if "CISERVER_DATABASE_URL" not in env and E2E_DATABASE.postgres is not None:
            self.env["CISERVER_DATABASE_URL"] = E2E_DATABASE.postgres.new_database()
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.token = ""
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["CISERVER_DATA_DIR"])

    @property
    def db_url(self) -> str:
        return self.env.get("CISERVER_DATABASE_URL") or f"sqlite:///{self.root / 'data' / 'ciserver.db'}"

    def audit(self) -> list[tuple[str, str, str]]:
        """The audit log, oldest first: (actor, action, target)."""
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as connection:
                query = sa.text("SELECT actor, action, target FROM audit_log ORDER BY id")
                return [(str(a), str(b), str(c)) for a, b, c in connection.execute(query)]
        finally:
            engine.dispose()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "ciserver", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ciserver {' '.join(args)} failed: {result.stderr}")
        return result

    def start(self, workers: int) -> None:
        for n in range(workers):
            self.start_worker(f"test-worker-{n + 1}")
        self.start_api()
        self.token = self.cli("token", "create", "--role", "admin").stdout.strip().splitlines()[-1]
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    def start_api(self) -> None:
        """`ciserver serve` on this server's port, once it answers."""
        with open(self.root / "api.log", "ab") as log:
            self.api = subprocess.Popen(
                [sys.executable, "-m", "ciserver", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(
                "ciserver serve did not answer within 30 s: " + (self.root / "api.log").read_text()
            )

    def start_worker(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        """`ciserver worker` in a process group of its own (with RQ's scheduler, its child), so a
        test can kill the whole of it; `env` over the server's (another host's data dir)."""
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ciserver", "worker"],
                env=dict(self.env, CISERVER_WORKER_NAME=name, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for proc in [*self.workers, self.api]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.api]:
            if proc is None:
                continue
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # RQ's scheduler, if it outlived its worker
        self.http.close()

    def add_project(self, name: str, repo: Path, forge: str = "github", secret: str = WEBHOOK_SECRET) -> None:
        self.cli("project", "add", name, "--repo", str(repo), "--forge", forge, "--secret", secret)

    def token_for(self, role: str) -> str:
        return self.cli("token", "create", "--role", role).stdout.strip().splitlines()[-1]

    def push_github(
        self, name: str, sha: str, *, secret: str = WEBHOOK_SECRET, delivery: str | None = None, **fields: Any
    ) -> httpx.Response:
        body = github_push_body(name, sha, **fields)
        return self.http.post(
            "/webhooks/github", content=body, headers=github_headers(body, secret, delivery=delivery)
        )

    def push_gitlab(
        self, path: str, sha: str, *, token: str = WEBHOOK_SECRET, **fields: Any
    ) -> httpx.Response:
        body = gitlab_push_body(path, sha, **fields)
        return self.http.post("/webhooks/gitlab", content=body, headers=gitlab_headers(token))

    def build(self, build_id: int) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/builds/{build_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_build(
        self, build_id: int, timeout: float = 60, until: tuple[str, ...] = FINAL
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            build = self.build(build_id)
            if build["status"] in until or time.monotonic() > deadline:
                return build
            time.sleep(0.1)

    def wait_job_status(self, build_id: int, job: str, status: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = {j["name"]: j for j in self.build(build_id)["jobs"]}
            if jobs.get(job, {}).get("status") == status:
                return jobs[job]
            time.sleep(0.1)
        raise AssertionError(f"job {job} of build {build_id} never reached {status}: {self.build(build_id)}")

    def log(self, job_id: int) -> str:
        response = self.http.get(f"/api/v1/jobs/{job_id}/log")
        assert response.status_code == 200, response.text
        return response.text

    def builds_of(self, project: str) -> dict[str, Any]:
        return self.http.get("/api/v1/builds", params={"project": project}).json()


@contextlib.contextmanager
def deploying_server(root: Path, redis_url: str, workers: int, **env: str) -> Iterator[CiServer]:
    """A ciserver whose deployments go through a private nginx, on `redis_url` (give each such server a
    Redis database of its own: the session's other servers have workers on the same queue names).
    What its deployments left on the engine, containers and networks, is removed afterwards."""
    nginx, reload = start_nginx(root / "data" / "nginx")
    server = CiServer(root, redis_url, **env)
    server.env["CISERVER_ROUTER_RELOAD"] = reload
    try:
        server.start(workers=workers)
        yield server
    finally:
        server.stop()
        nginx.terminate()
        nginx.wait(10)
        label = f"label=ciserver.deploy={root / 'data'}"
        for kind in (["ps", "-aq"], ["network", "ls", "-q"]):  # the containers before their networks
            found = subprocess.run(["docker", *kind, "--filter", label], capture_output=True, text=True)
            if found.stdout.split():
                remove = ["rm", "-f"] if kind[0] == "ps" else ["network", "rm"]
                subprocess.run(["docker", *remove, *found.stdout.split()], capture_output=True)
