"""The traffic router: nginx with one generated file per environment, holding a weighted upstream
and the server that listens on the environment's address, then a reload.

nginx does the proxying; ciserver only writes its configuration. A reload lets the old worker
processes finish the requests they hold while new ones take the new weights, so shifting traffic
drops no request. The access log records which upstream answered each request and its status,
which the canary analysis reads.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ACCESS_LOG_FORMAT = "ciserver"
_ENVIRONMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,199}")
_LISTEN = re.compile(r"(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|localhost):\d{1,5}")
_ADDRESS = re.compile(r"(?:\d{1,3}(?:\.\d{1,3}){3}|localhost):\d{1,5}")


def route_name(project: str, environment: str) -> str:
    """The nginx name of a project's environment: OWNER-NAME-ENV, lowercase, safe in file names."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", project.lower()).strip("-")
    return f"{slug}-{environment}"[:200]


class RouterError(Exception):
    """The router could not take the new weights (a bad address, nginx refusing its configuration)."""


@dataclass(frozen=True)
class Backend:
    """One version of the service: where it answers, and its share of the requests (0 to 100)."""

    address: str  # host:port, on loopback
    weight: int


class Router(Protocol):
    def set_weights(self, environment: str, listen: str, backends: Sequence[Backend]) -> None:
        """Route the environment's traffic, arriving at `listen`, to `backends` by their weights."""
        ...

    def remove(self, environment: str) -> None:
        """Stop serving the environment."""
        ...


class NginxRouter:
    """Writes `<root>/environments/<environment>.conf` and reloads nginx with `reload_command`."""

    def __init__(self, root: Path, reload_command: str) -> None:
        self.root, self.reload_command = root, reload_command

    @property
    def environments_dir(self) -> Path:
        return self.root / "environments"

    def access_log(self, environment: str) -> Path:
        """Where nginx logs the environment's requests (relative paths in nginx are to its prefix)."""
        return self.root / "logs" / f"{_checked(environment)}.access.log"

    def set_weights(self, environment: str, listen: str, backends: Sequence[Backend]) -> None:
        config = upstream_config(environment, listen, backends, access_log=self.access_log(environment))
        self._write(environment, config)

    def remove(self, environment: str) -> None:
        path = self.environments_dir / f"{_checked(environment)}.conf"
        if path.exists():
            path.unlink()
            self.reload()

    def _write(self, environment: str, text: str) -> None:
        self.environments_dir.mkdir(parents=True, exist_ok=True)
        path = self.environments_dir / f"{environment}.conf"
        previous = path.read_text() if path.exists() else None
        fd, temporary = tempfile.mkstemp(dir=self.environments_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, path)  # nginx only includes *.conf: never a half-written file
        try:
            self.reload()
        except RouterError:
            if previous is None:
                path.unlink()
            else:
                path.write_text(previous)
            raise

    def reload(self) -> None:
        """Reload nginx and, when it runs on this host, wait until the old worker processes have
        handed over: `nginx -s reload` only signals the master, which applies the change a moment later."""
        master = _nginx_master(self.root / "nginx.pid")
        before = _children(master) if master else set()
        self._signal_reload()
        if master is None:
            return
        deadline = time.monotonic() + RELOAD_WAIT
        while time.monotonic() < deadline:
            now = _children(master)
            if now and not (now & before):
                return
            time.sleep(0.01)

    def _signal_reload(self) -> None:
        try:
            result = subprocess.run(
                shlex.split(self.reload_command), capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RouterError(f"could not run {self.reload_command!r}: {exc}") from None
        if result.returncode != 0:
            raise RouterError(
                f"{self.reload_command!r} failed: {result.stderr.strip() or result.stdout.strip()}"
            )


RELOAD_WAIT = 10.0  # seconds; old workers finish their requests in flight first


def _nginx_master(pid_file: Path) -> int | None:
    """The pid of the nginx master whose pid file this is, when it runs in this process namespace."""
    try:
        pid = int(pid_file.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "nginx" else None


def _children(parent: int) -> set[int]:
    """Live processes whose parent is `parent` (nginx's workers), from /proc."""
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(parent) and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def upstream_config(
    environment: str, listen: str, backends: Sequence[Backend], *, access_log: Path | None = None
) -> str:
    """The nginx configuration of one environment; weights are percentages, 0 leaves a backend out.
    The access log is `access_log`, or logs/<environment>.access.log under nginx's prefix."""
    name = _checked(environment)
    log_path = str(access_log) if access_log else f"logs/{name}.access.log"
    if any(ch.isspace() or ch in ";{}\"'" for ch in log_path):
        raise RouterError(f"access log path {log_path!r}: no spaces, quotes, ';' or braces")
    if not _LISTEN.fullmatch(listen):
        raise RouterError(f"listen: {listen!r} is not host:port")
    serving = [backend for backend in backends if backend.weight > 0]
    if not serving:
        raise RouterError(f"environment {environment!r}: no backend has a weight above 0")
    lines = [f"upstream ciserver_{name} {{"]
    for backend in serving:
        if not _ADDRESS.fullmatch(backend.address) or not 0 < backend.weight <= 100:
            raise RouterError(f"backend {backend.address!r} weight {backend.weight}: not host:port and 1-100")
        # No retry on another backend: a canary's failures must reach its figures, not be hidden.
        lines.append(f"    server {backend.address} weight={backend.weight} max_fails=0;")
    lines += [
        "    keepalive 16;",
        "}",
        "server {",
        f"    listen {listen};",
        # A reload closes the old workers' idle client connections; a client sending on one at that
        # moment gets no answer. Closing after each answer means no request ever meets that race.
        "    keepalive_timeout 0;",
        f"    access_log {log_path} {ACCESS_LOG_FORMAT};",
        "    location / {",
        f"        proxy_pass http://ciserver_{name};",
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        proxy_set_header Host $host;",
        "        proxy_next_upstream off;",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def main_config(root: Path) -> str:
    """nginx.conf of the private nginx `ciserver up` starts: everything under `root`."""
    return f"""\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format {ACCESS_LOG_FORMAT} '$msec $upstream_addr $status $request_time';
    access_log off;
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
    include {root}/environments/*.conf;
}}
"""


def _checked(environment: str) -> str:
    if not _ENVIRONMENT.fullmatch(environment):
        raise RouterError(
            f"environment {environment!r}: lowercase letters, digits, '-' and '_' only, at most 200"
        )
    return environment
