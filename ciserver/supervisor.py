"""`ciserver up`: a private Redis, a private nginx (the deployment router), the API and N workers as
child processes of one command.

Children die with it (PR_SET_PDEATHSIG), are restarted if they crash, and are stopped in order
on SIGTERM or Ctrl-C: the API first (no new pushes), then the workers (given a grace period to
finish their jobs, then told to stop them), then nginx, then Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError

from ciserver.child_process import Child, StartError, wait
from ciserver.config import Settings
from ciserver.ports import free_port
from ciserver.private_nginx import find_nginx, start_nginx, stop_nginx
from ciserver.progress import ProgressPrinter

__all__ = ["StartError", "Supervisor"]

RESTART_BACKOFF = 2.0


@dataclass
class Supervisor:
    settings: Settings
    host: str
    port: int
    workers: int
    children: list[Child] = field(default_factory=list)
    redis: Child | None = None
    nginx: Child | None = None
    progress: ProgressPrinter | None = None
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
        logs = self.settings.process_logs_dir
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
        # One line per build, job end and deployment step, from what happens after this point on.
        self.progress = ProgressPrinter(
            self.settings.db_url,
            self.settings.redis_url or env["CISERVER_REDIS_URL"],
            f"http://{self.host}:{self.port}",
        )
        self.progress.start_here()
        for child in self.children:
            child.start()
        print(
            f"ciserver is up: http://{self.host}:{self.port}  (the dashboard; API docs at /docs;"
            f" process logs in {logs})",
            flush=True,
        )
        print(f"  {self.workers} workers, data in {data}; Ctrl-C stops everything", flush=True)
        self.progress.start()
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
        self.redis = Child("redis", argv, dict(os.environ), self.settings.process_logs_dir / "redis.log")
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
        server = find_nginx()
        if server is None:
            print("ciserver: nginx is not installed, so deployments cannot route traffic", flush=True)
            return None
        self.nginx, reload = start_nginx(self.settings, server)
        return reload

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
        wait(api + workers, self.settings.stop_grace)
        for child in workers:
            child.signal(signal.SIGTERM)  # a second SIGTERM: stop the job now, remove its container
        wait(workers, 10)
        if self.progress is not None and self.progress.is_alive():
            self.progress.stopped.set()  # after the workers: the ends of their last jobs are printed
            self.progress.join(5)
        for child in self.children:
            child.signal(signal.SIGKILL)
        wait(self.children, 5)
        if self.nginx is not None:
            stop_nginx(self.nginx)
        if self.redis is not None:
            self.redis.signal(signal.SIGTERM)
            wait([self.redis], 5)
            self.redis.signal(signal.SIGKILL)
            wait([self.redis], 2)
