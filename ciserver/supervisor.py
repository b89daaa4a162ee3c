"""`ciserver up`: a private Redis, a private nginx (the deployment router), the API and N workers as
child processes of one command.

Children die with it (PR_SET_PDEATHSIG), are restarted if they crash, and are stopped in order
on SIGTERM or Ctrl-C: the API first (no new pushes), then the workers (given a grace period to
finish their jobs, then told to stop them), then nginx, then Redis.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from ciserver.config import Settings
from ciserver.deploy.nginx_control import CONTROL_FILE
from ciserver.deploy.router import main_config
from ciserver.ports import free_port

PR_SET_PDEATHSIG = 1
RESTART_BACKOFF = 2.0


class StartError(Exception):
    """`up` cannot start; the message says what to install or set."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if `up` is killed outright, its children follow.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)


@dataclass
class Supervisor:
    settings: Settings
    host: str
    port: int
    workers: int
    children: list[Child] = field(default_factory=list)
    redis: Child | None = None
    nginx: Child | None = None
    stopping: bool = False

    def run(self) -> int:
        data = self.settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, CISERVER_DATA_DIR=str(data))
        if not self.settings.redis_url:
            env["CISERVER_REDIS_URL"] = self._start_redis()
        if not self.settings.router_reload:
            reload = self._start_nginx()
            if reload:
                env["CISERVER_ROUTER_RELOAD"] = reload
        python = [sys.executable, "-m", "ciserver"]
        logs = data / "log"
        self.children.append(
            Child(
                "api",
                [*python, "serve", "--host", self.host, "--port", str(self.port)],
                env,
                logs / "api.log",
            )
        )
        for n in range(1, self.workers + 1):
            worker_env = dict(env, CISERVER_WORKER_NAME=f"{socket.gethostname()}.up-{os.getpid()}.{n}")
            self.children.append(
                Child(f"worker-{n}", [*python, "worker"], worker_env, logs / f"worker-{n}.log")
            )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._request_stop)
        for child in self.children:
            child.start()
        print(
            f"ciserver is up: http://{self.host}:{self.port}  (API docs at /docs; logs in {logs})", flush=True
        )
        print(f"  {self.workers} workers, data in {data}; Ctrl-C stops everything", flush=True)
        while not self.stopping:
            self._restart_crashed()
            time.sleep(0.5)
        self._stop_all()
        return 0

    def _request_stop(self, signum: int, _frame: object) -> None:
        self.stopping = True

    def _start_redis(self) -> str:
        server = shutil.which("redis-server")
        if server is None:
            raise StartError(
                "redis-server is not installed: install it (Debian/Ubuntu: apt-get install redis-server) "
                "or set CISERVER_REDIS_URL to a running Redis"
            )
        port = free_port()
        directory = self.settings.data_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        argv = [
            server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "yes",
        ]  # fmt: skip
        self.redis = Child("redis", argv, dict(os.environ), self.settings.data_dir / "log" / "redis.log")
        self.redis.start()
        url = f"redis://127.0.0.1:{port}/0"
        client = Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not self.redis.alive():
                raise StartError(f"redis-server exited at start; see {self.redis.log_path}")
            try:
                if client.ping():
                    return url
            except RedisError:
                time.sleep(0.05)
        raise StartError(f"redis-server did not answer within 15 s; see {self.redis.log_path}")

    def _start_nginx(self) -> str | None:
        """nginx with its configuration, environments and logs under the data dir; returns the
        command that reloads it. Without nginx, builds still run: deployments say what is missing."""
        server = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
        if server is None:
            print("ciserver: nginx is not installed, so deployments cannot route traffic", flush=True)
            return None
        root = self.settings.router_dir
        for sub in ("logs", "temp", "environments"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        conf = root / "nginx.conf"
        conf.write_text(main_config(root))
        (root / "nginx.pid").unlink(missing_ok=True)
        # The router's marker server: its port may have been taken while nginx was down, and nginx
        # would not start; the first change writes it again on a free port.
        (root / "environments" / CONTROL_FILE).unlink(missing_ok=True)
        argv = [server, "-p", str(root), "-c", str(conf)]
        self.nginx = Child("nginx", argv, dict(os.environ), self.settings.data_dir / "log" / "nginx.log")
        self.nginx.start()
        deadline = time.monotonic() + 15
        while not (root / "nginx.pid").exists():
            if not self.nginx.alive() or time.monotonic() > deadline:
                raise StartError(f"nginx did not start; see {self.nginx.log_path} and {root / 'logs'}")
            time.sleep(0.05)
        return shlex.join([*argv, "-s", "reload"])

    def _restart_crashed(self) -> None:
        for child in self.children:
            if child.alive() or self.stopping:
                continue
            code = child.proc.returncode if child.proc else None
            if time.monotonic() - child.started_at < RESTART_BACKOFF:
                continue
            print(f"ciserver: {child.name} exited ({code}); restarting (see {child.log_path})", flush=True)
            child.start()

    def _stop_all(self) -> None:
        api = [c for c in self.children if c.name == "api"]
        workers = [c for c in self.children if c.name != "api"]
        for child in api + workers:
            child.signal(signal.SIGTERM)  # workers: finish the current job, take no new one
        _wait(api + workers, self.settings.stop_grace)
        for child in workers:
            child.signal(signal.SIGTERM)  # a second SIGTERM: stop the job now, remove its container
        _wait(workers, 10)
        for child in self.children:
            child.signal(signal.SIGKILL)
        _wait(self.children, 5)
        if self.nginx is not None:
            self.nginx.signal(signal.SIGQUIT)  # graceful: requests in flight are answered
            _wait([self.nginx], 10)
            self.nginx.signal(signal.SIGKILL)
            _wait([self.nginx], 2)
        if self.redis is not None:
            self.redis.signal(signal.SIGTERM)
            _wait([self.redis], 5)
            self.redis.signal(signal.SIGKILL)
            _wait([self.redis], 2)


def _wait(children: list[Child], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for child in children:
        if child.proc is None:
            continue
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(max(0.0, deadline - time.monotonic()))
