"""The traffic router: nginx with one generated file per environment, holding a weighted upstream
and the server that listens on the environment's address, then a reload.

nginx does the proxying; ciserver only writes its configuration. A reload lets the old worker
processes finish the requests they hold while new ones take the new weights, so shifting traffic
drops no request. The access log records which upstream answered each request and its status,
which the canary analysis reads.

Every change is all or nothing, for every project at once: made under a lock, refused when its
address overlaps another environment's, and confirmed running (ciserver.deploy.nginx_control); a
change nginx did not apply is taken back and nginx reloaded on the files as they were, so one
environment's bad address never freezes the others' reloads. A journal in the lock file lets the
next change undo one whose worker died half way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ciserver.deploy.nginx_control import NginxControl, RouterError, config_test_command
from ciserver.pipeline import listens_overlap, normalize_listen

ACCESS_LOG_FORMAT = "ciserver"
_ENVIRONMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,199}")
_ADDRESS = re.compile(r"(?:\d{1,3}(?:\.\d{1,3}){3}|localhost):\d{1,5}")
_LISTEN_LINE = re.compile(r"^\s*listen\s+([^\s;]+)", re.MULTILINE)


@dataclass(frozen=True)
class Backend:
    """One version of the service: where it answers, and its share of the requests (0 to 100)."""

    address: str  # host:port, on loopback
    weight: int


class NginxRouter:
    """Writes `<root>/environments/<environment>.conf` and has nginx run it: tested with
    `test_command` (default: the reload command's `nginx -t`), applied with `reload_command`."""

    def __init__(self, root: Path, reload_command: str, test_command: str | None = None) -> None:
        self.root = root
        self.nginx = NginxControl(
            self.environments_dir,
            reload_command,
            test_command or config_test_command(reload_command),
            error_log=root / "logs" / "error.log",  # the private nginx's (main_config)
            pid_file=root / "nginx.pid",
        )

    @property
    def environments_dir(self) -> Path:
        return self.root / "environments"

    def access_log(self, environment: str) -> Path:
        """Where nginx logs the environment's requests (relative paths in nginx are to its prefix)."""
        return self.root / "logs" / f"{_checked(environment)}.access.log"

    def set_weights(
        self, environment: str, listen: str, backends: Sequence[Backend], *, replaces: Sequence[str] = ()
    ) -> None:
        """Route the environment's traffic, arriving at `listen`, to `backends` by their weights.
        `replaces` names older files of this environment: one that listens on `listen` goes with this
        change. Any other file listening there makes it an error."""
        config = upstream_config(environment, listen, backends, access_log=self.access_log(environment))
        with self._locked() as journal:
            taken = self._listening_on(listen, besides=environment)
            for name, other in taken.items():
                if name not in replaces:
                    raise RouterError(f"listen {listen}: {name}.conf already listens on {other}")
            self._apply(journal, {environment: config, **dict.fromkeys(taken)})

    def remove(self, environment: str, listen: str | None, *, replaces: Sequence[str] = ()) -> None:
        """Stop serving the environment: its file goes (and of `replaces`, one that listens on
        `listen`), and nginx runs without it, so nothing answers at its address any more."""
        with self._locked() as journal:
            gone = [environment]
            if listen is not None:
                gone += [name for name in self._listening_on(listen, besides=environment) if name in replaces]
            if any(self._path(name).exists() for name in gone):
                self._apply(journal, dict.fromkeys(gone))

    def _path(self, environment: str) -> Path:
        return self.environments_dir / f"{_checked(environment)}.conf"

    def _listening_on(self, listen: str, besides: str) -> dict[str, str]:
        """The other files whose server listens where `listen` would (name -> their address): nginx
        lets two servers share a socket and gives its traffic to whichever it read first."""
        found = {}
        for path in sorted(self.environments_dir.glob("*.conf")):
            if path.stem == besides:
                continue
            for other in _LISTEN_LINE.findall(path.read_text()):
                with contextlib.suppress(ValueError):  # not host:port (unix:...): no overlap
                    if listens_overlap(listen, other):
                        found[path.stem] = other
        return found

    def _apply(self, journal: IO[str], changes: Mapping[str, str | None]) -> None:
        """Write the files (None removes one) and have nginx run them; if it does not, put them back
        as they were and have nginx run those again."""
        previous = {name: _read(self._path(name)) for name in changes}
        _save_journal(journal, previous)
        self._write(changes)
        try:
            self.nginx.apply()
        except RouterError as exc:
            self._write(previous)
            try:
                # Without fail_fast: the failed reload may still be logging (nginx retries a bind).
                self.nginx.apply(fail_fast=False)
            except RouterError as again:
                raise RouterError(f"{exc}; and nginx did not take the previous files back: {again}") from None
            raise
        finally:
            _save_journal(journal, {})

    def _write(self, files: Mapping[str, str | None]) -> None:
        for name, text in files.items():
            path = self._path(name)
            if text is None:
                path.unlink(missing_ok=True)
                continue
            fd, temporary = tempfile.mkstemp(dir=self.environments_dir, suffix=".tmp")
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(temporary, path)  # nginx only includes *.conf: never a half-written file

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[str]]:
        """The router's lock, shared by every worker of this host; yields its journal. A journal left
        by a holder that died (files changed, not confirmed) is undone first."""
        self.environments_dir.mkdir(parents=True, exist_ok=True)
        with open(self.root / "router.lock", "a+") as journal:
            fcntl.flock(journal, fcntl.LOCK_EX)
            journal.seek(0)
            left = journal.read()
            if left:
                self._write(json.loads(left))
                _save_journal(journal, {})
                self.nginx.apply(fail_fast=False)
            yield journal


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _save_journal(journal: IO[str], files: Mapping[str, str | None]) -> None:
    journal.seek(0)
    journal.truncate()
    if files:
        journal.write(json.dumps(files))
    journal.flush()


def upstream_config(
    environment: str, listen: str, backends: Sequence[Backend], *, access_log: Path | None = None
) -> str:
    """The nginx configuration of one environment; weights are percentages, 0 leaves a backend out.
    The access log is `access_log`, or logs/<environment>.access.log under nginx's prefix."""
    name = _checked(environment)
    log_path = str(access_log) if access_log else f"logs/{name}.access.log"
    if any(ch.isspace() or ch in ";{}\"'" for ch in log_path):
        raise RouterError(f"access log path {log_path!r}: no spaces, quotes, ';' or braces")
    try:
        listen = normalize_listen(listen)
    except ValueError as exc:
        raise RouterError(f"listen: {exc}") from None
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
