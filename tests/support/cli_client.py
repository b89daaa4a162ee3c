"""The `ciserver` client commands run as a person runs them: another process, in a directory of its own
with no data dir and no CISERVER_* setting but the server's address and a token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.server import CiServer


def client_env(server: CiServer, token: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CISERVER_") and k != "NO_COLOR"}
    env["CISERVER_URL"] = server.url
    if token is not None:
        env["CISERVER_TOKEN"] = token
    return {**env, **extra}


def run_client(
    server: CiServer, cwd: Path, *args: str, token: str | None = "", timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    """`ciserver ARGS` from `cwd` with the server's admin token (`token=""`), another, or none."""
    return subprocess.run(
        [sys.executable, "-m", "ciserver", *args],
        env=client_env(server, server.token if token == "" else token, **extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_client(server: CiServer, cwd: Path, *args: str, token: str | None = "") -> subprocess.Popen[str]:
    """`ciserver ARGS` started, its output read as it comes (line-buffered text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ciserver", *args],
        env=client_env(server, server.token if token == "" else token, PYTHONUNBUFFERED="1"),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
