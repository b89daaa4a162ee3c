"""The services a ciserver needs, run privately for a test: redis-server and nginx."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from ciserver.deploy.router import main_config
from ciserver.ports import free_port


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


class RedisServer:
    """A private redis-server (the whole run's, or a test's own), with an append-only file, that can be
    killed and started again on the same port with the same data (as a restart of a production Redis)."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise AssertionError("redis-server is not installed (apt-get install redis-server)")
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

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def redis_database(url: str, number: int) -> str:
    """The same Redis at another database number: a server whose workers must take only its own work
    (and whose queues no other test's workers see) gets a database of its own."""
    return url.rsplit("/", 1)[0] + f"/{number}"
