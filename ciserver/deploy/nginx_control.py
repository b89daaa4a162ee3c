"""Making nginx run the configuration in its directory, and knowing that it does.

`nginx -s reload` only signals the master. When the new configuration cannot be applied (a `listen`
another process holds, an address not on this host) the master logs `[emerg]` and keeps the old
one, while the command has already exited 0; `nginx -t` does not bind, so it passes too. Hence:
test first, reload, then confirm. The confirmation is a generation marker: a small server in the
included directory answers a random token written with each change, and only workers started from
the new configuration know it. Unlike watching worker processes or reading logs, that works for any
nginx including the directory (`ciserver up`'s own, an operator's, one in another pid namespace)
and proves exactly what matters: the new configuration serves. nginx's own words come from its
error log when we can read it (the private nginx's `logs/error.log`). Where its master is visible
(the private nginx's pid file), the change also waits for the old workers to finish the requests
they hold, so a container the caller removes next is no longer in use.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import shlex
import subprocess
import time
from pathlib import Path

from ciserver.ports import free_port

CONTROL_FILE = "_control.conf"  # environments' names start with a letter or digit: never this one
GENERATION_PATH = "/ciserver-generation"
CONFIRM_WAIT = 10.0  # seconds for nginx to answer with the new generation
DRAIN_WAIT = 10.0  # seconds for the old workers to finish their requests in flight
_CONTROL_LISTEN = re.compile(r"listen 127\.0\.0\.1:(\d+);")
_ERROR = re.compile(r"^\S+ \S+ \[(?:emerg|alert|crit)\] \S+ (.*)$", re.MULTILINE)


class RouterError(Exception):
    """The router could not take the new weights (a bad address, an address in use, nginx refusing
    or not applying its configuration); the message is nginx's where known."""


def config_test_command(reload_command: str) -> str | None:
    """`nginx ... -s reload` tests its configuration as `nginx ... -t -q`; other commands: unknown."""
    words = shlex.split(reload_command)
    for n in range(len(words) - 1):
        if words[n : n + 2] == ["-s", "reload"]:
            return shlex.join([*words[:n], "-t", "-q", *words[n + 2 :]])
    return None


class NginxControl:
    """Test, reload and confirm the configuration of the nginx that includes `directory`."""

    def __init__(
        self, directory: Path, reload_command: str, test_command: str | None, error_log: Path, pid_file: Path
    ) -> None:
        self.directory, self.error_log, self.pid_file = directory, error_log, pid_file
        self.reload_command, self.test_command = reload_command, test_command

    def apply(self, *, fail_fast: bool = True) -> None:
        """Run the directory's files; RouterError when nginx does not. With `fail_fast`, an [emerg] in
        the error log after our reload ends the wait at once (the caller holds the router's lock, so
        the reload that logged it is ours); without, only the generation (or the time) decides."""
        token = secrets.token_hex(16)
        port = self._write_control(token)
        if self.test_command is not None:
            _run(self.test_command, "nginx refused the configuration")
        offset = _size(self.error_log)
        master = _nginx_master(self.pid_file)
        old_workers = _children(master) if master else set()
        _run(self.reload_command, "could not reload nginx")
        deadline = time.monotonic() + CONFIRM_WAIT
        while _generation(port) != token:
            errors = self._errors_since(offset)
            if (errors and fail_fast) or time.monotonic() > deadline:
                raise RouterError(
                    f"nginx did not apply the configuration: {errors}"
                    if errors
                    else f"nginx did not take the new configuration within {CONFIRM_WAIT:.0f} s (is it "
                    f"running, and does it include {self.directory}/*.conf? its error log says more)"
                )
            time.sleep(0.02)
        deadline = time.monotonic() + DRAIN_WAIT
        while master and old_workers & _children(master) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _write_control(self, token: str) -> int:
        """The marker server's file with a new token, on the loopback port it already has (or a free one)."""
        path = self.directory / CONTROL_FILE
        found = _CONTROL_LISTEN.search(path.read_text()) if path.exists() else None
        port = int(found[1]) if found else free_port()
        path.write_text(
            "# ciserver: answers which configuration nginx runs (ciserver/deploy/nginx_control.py)\n"
            "server {\n"
            f"    listen 127.0.0.1:{port};\n"
            "    access_log off;\n"
            f'    location = {GENERATION_PATH} {{ return 200 "{token}"; }}\n'
            "    location / { return 404; }\n"
            "}\n"
        )
        return port

    def _errors_since(self, offset: int) -> str:
        """nginx's [emerg], [alert] and [crit] messages written after `offset`, once each."""
        try:
            with self.error_log.open("rb") as log:
                log.seek(offset)
                text = log.read(64 * 1024).decode(errors="replace")
        except OSError:
            return ""
        return "; ".join(dict.fromkeys(_ERROR.findall(text)))


def _run(command: str, failure: str) -> None:
    try:
        result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RouterError(f"{failure}: could not run {command!r}: {exc}") from None
    if result.returncode != 0:
        said = (result.stderr.strip() or result.stdout.strip()).replace("\n", "; ")
        raise RouterError(f"{failure}: {command!r} failed: {said}")


def _generation(port: int) -> str | None:
    """The token the running configuration answers with, or None while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", GENERATION_PATH)
        response = connection.getresponse()
        return response.read().decode(errors="replace") if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
