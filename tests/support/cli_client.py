"""The `ciserver` client commands run as a person runs them: another process, in a directory of its own
with no data dir and no CISERVER_* setting but the server's address and a token."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
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


def run_in_terminal(
    server: CiServer, cwd: Path, *args: str, timeout: float = 120, **extra: str
) -> tuple[int, str]:
    """`ciserver ARGS` with a pseudo-terminal as its stdout and stderr, as in a person's shell: its
    exit status and all it wrote there."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ciserver", *args],
        env=client_env(server, server.token, TERM="xterm-256color", COLUMNS="160", **extra),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            output += chunk
        return proc.wait(10), output.decode("utf-8", errors="replace")
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
