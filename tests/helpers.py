"""Test helpers: git repositories, signed forge webhooks, and a ciserver run as real processes."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from ciserver.config import Settings
from ciserver.crypto import load_fernet
from ciserver.deploy.router import main_config
from ciserver.pipeline import load_pipeline
from ciserver.ports import free_port
from ciserver.store.db import session_scope
from ciserver.store.models import Build, Job, Project, Role, Status
from ciserver.store.tokens import create_token

BUSYBOX = "ciserver-test/busybox:latest"
FINAL = ("success", "failed", "error", "canceled", "skipped")
ZERO_SHA = "0" * 40
WEBHOOK_SECRET = "s3cret-s3cret-s3cret"  # registration asks for at least 16 characters


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path, files: dict[str, str], branch: str = "main") -> str:
    """A new repository with one commit holding `files`; returns the commit's sha."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "user.email", "dev@example.org")
    git(path, "config", "user.name", "Dev")
    return commit(path, files, "first commit")


def commit(path: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", message)
    return git(path, "rev-parse", "HEAD")


def github_push_body(
    full_name: str,
    sha: str,
    *,
    ref: str = "refs/heads/main",
    message: str = "a commit",
    before: str = ZERO_SHA,
) -> bytes:
    """A push payload with the fields GitHub documents for the push event."""
    owner, name = full_name.split("/", 1)
    head = {
        "id": sha,
        "tree_id": "f" * 40,
        "distinct": True,
        "message": message,
        "timestamp": "2026-11-25T10:20:30Z",
        "url": f"https://github.com/{full_name}/commit/{sha}",
        "author": {"name": "Dev", "email": "dev@example.org", "username": "dev"},
        "committer": {"name": "Dev", "email": "dev@example.org", "username": "dev"},
        "added": ["pipelines.yml"],
        "removed": [],
        "modified": [],
    }
    deleted = sha == ZERO_SHA
    payload = {
        "ref": ref,
        "before": before,
        "after": sha,
        "created": before == ZERO_SHA,
        "deleted": deleted,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{full_name}/compare/{before[:12]}...{sha[:12]}",
        "commits": [] if deleted else [head],
        "head_commit": None if deleted else head,
        "repository": {
            "id": 1296269,
            "name": name,
            "full_name": full_name,
            "private": False,
            "owner": {"name": owner, "login": owner, "id": 1, "type": "User"},
            "clone_url": f"https://github.com/{full_name}.git",
            "default_branch": "main",
        },
        "pusher": {"name": "dev", "email": "dev@example.org"},
        "sender": {"login": "dev", "id": 1, "type": "User"},
    }
    return json.dumps(payload).encode()


def github_headers(
    body: bytes, secret: str, *, event: str = "push", delivery: str | None = None
) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "User-Agent": "GitHub-Hookshot/test",
    }


def gitlab_push_body(
    path: str, sha: str, *, ref: str = "refs/heads/main", message: str = "a commit"
) -> bytes:
    """A push payload with the fields GitLab documents for push events."""
    namespace, name = path.rsplit("/", 1)
    payload = {
        "object_kind": "push",
        "event_name": "push",
        "before": ZERO_SHA,
        "after": sha,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": sha,
        "user_id": 4,
        "user_name": "Dev",
        "user_username": "dev",
        "project_id": 15,
        "project": {
            "id": 15,
            "name": name,
            "namespace": namespace,
            "path_with_namespace": path,
            "default_branch": "main",
            "git_http_url": f"http://gitlab.example.com/{path}.git",
            "git_ssh_url": f"git@gitlab.example.com:{path}.git",
        },
        "commits": [
            {
                "id": sha,
                "message": message,
                "title": message,
                "timestamp": "2026-11-25T10:20:30+00:00",
                "url": f"http://gitlab.example.com/{path}/-/commit/{sha}",
                "author": {"name": "Dev", "email": "dev@example.org"},
                "added": ["pipelines.yml"],
                "modified": [],
                "removed": [],
            }
        ],
        "total_commits_count": 1,
        "repository": {"name": name, "git_http_url": f"http://gitlab.example.com/{path}.git"},
    }
    return json.dumps(payload).encode()


def gitlab_headers(token: str, *, event: str = "Push Hook", delivery: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": delivery or str(uuid.uuid4()),
    }


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
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.token = ""
        self.http = httpx.Client(base_url=self.url, timeout=30)

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

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """`ciserver worker` in a process group of its own (with RQ's scheduler, its child), so a
        test can kill the whole of it."""
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ciserver", "worker"],
                env=dict(self.env, CISERVER_WORKER_NAME=name),
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


def containers_of_job(job_id: int, data_dir: Path | None = None) -> list[str]:
    """Containers labelled with this job (of this data dir: ids repeat across test servers)."""
    filters = ["--filter", f"label=ciserver.job={job_id}"]
    if data_dir is not None:
        filters += ["--filter", f"label=ciserver.data_dir={data_dir}"]
    return subprocess.run(["docker", "ps", "-aq", *filters], capture_output=True, text=True).stdout.split()


def green_build(
    session: Session,
    project: Project,
    pipeline: str,
    *,
    branch: str | None = "main",
    tag: str | None = None,
    status: Status = Status.success,
) -> Build:
    """A build of `pipeline` with its image built, as a worker leaves it: what a release is made of."""
    loaded = load_pipeline(pipeline)
    build = Build(
        project_id=project.id,
        ref=f"refs/heads/{branch}" if branch else f"refs/tags/{tag}",
        branch=branch,
        tag=tag,
        sha=f"{session.query(Build).count():040d}",
        default_branch="main",
        status=status.value,
        deploy=loaded.model_dump(
            mode="json", include={"environments", "service", "image"}, exclude_none=True
        ),
    )
    session.add(build)
    session.flush()
    image = "sha256:" + "1" * 64
    session.add(
        Job(
            build_id=build.id, position=0, name="package", stage="test", image="", script=[], env={},
            timeout=60, after=[], status=Status.success.value,
            image_tag="ciserver/octo-app:x", image_id=image, image_digest=image,
        )
    )  # fmt: skip
    session.flush()
    return build


def fernet_of(session: Session) -> Fernet:
    """The key of the data dir this session's database is in, as the server loads it."""
    database = session.get_bind().url.database
    assert database is not None
    return load_fernet(Settings(data_dir=Path(database).parent))


def bearer(settings: Settings, role: Role) -> dict[str, str]:
    """The Authorization header of a new token with this role, made in the settings' database."""
    with session_scope(settings.db_url) as session:
        _, secret = create_token(session, role)
    return {"Authorization": f"Bearer {secret}"}


def start_nginx(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private nginx as `ciserver up` starts it, all under `root`; with the command that reloads it."""
    for sub in ("logs", "temp", "environments"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "nginx.conf").write_text(main_config(root))
    command = ["nginx", "-p", str(root), "-c", str(root / "nginx.conf")]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not (root / "nginx.pid").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"nginx did not start: {proc.stderr.read() if proc.stderr else ''!r}")
        time.sleep(0.05)
    return proc, " ".join([*command, "-s", "reload"])


@contextlib.contextmanager
def deploying_server(root: Path, redis_url: str, workers: int) -> Iterator[CiServer]:
    """A ciserver whose deployments go through a private nginx, on `redis_url` (give each such server a
    Redis database of its own: the session's other servers have workers on the same queue names).
    What its deployments left on the engine, containers and networks, is removed afterwards."""
    nginx, reload = start_nginx(root / "data" / "nginx")
    server = CiServer(root, redis_url)
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


class RedisServer:
    """A redis-server of a test's own, with an append-only file, that can be killed and started again
    on the same port with the same data (as a restart of a production Redis)."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--appendonly", "yes", "--save", ""]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        client = Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except RedisError:
                if time.monotonic() > deadline:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)


class LogFollower(threading.Thread):
    """A client of a job's log stream that behaves as a browser's EventSource: when the connection
    drops it connects again with Last-Event-ID, until the stream says the job ended."""

    def __init__(self, base_url: str, token: str, job_id: int) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/api/v1/jobs/{job_id}/log/stream"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.text, self.last_id, self.status = "", "", None
        self.reconnects = 0

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while self.status is None and time.monotonic() < deadline:
            headers = dict(self.headers, **({"Last-Event-ID": self.last_id} if self.last_id else {}))
            try:
                with httpx.stream("GET", self.url, headers=headers, timeout=30) as response:
                    self._read(response)
            except httpx.TransportError:
                pass
            if self.status is None:
                self.reconnects += 1
                time.sleep(0.2)

    def _read(self, response: httpx.Response) -> None:
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                key, _, value = line.partition(":")
                event[key] = value.removeprefix(" ")
                continue
            if event.get("event") == "log":
                self.text += json.loads(event["data"])["text"]
                self.last_id = event["id"]
            elif event.get("event") == "end":
                self.status = json.loads(event["data"])["status"]
                return
            event = {}


class EngineProxy:
    """The Docker Engine's socket relayed through one of ours, which a test can take away and bring
    back: to the worker it is the engine becoming unreachable for a moment."""

    def __init__(self, path: Path) -> None:
        self.path = path
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        self.engine = host.removeprefix("unix://")
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []

    def up(self) -> None:
        self.path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(self.path))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.path.unlink(missing_ok=True)
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(self.engine)
            self.conns += [client, engine]
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
