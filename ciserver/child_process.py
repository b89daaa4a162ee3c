"""Child processes of a ciserver command (`up`'s Redis, nginx, API and workers; `worker --router`'s
nginx): started with their output in a log file, and dying with their parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1


class StartError(Exception):
    """A command cannot start what it needs; the message says what to install or set."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the parent is killed outright, its children follow.
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


def wait(children: list[Child], seconds: float) -> None:
    """Wait up to `seconds` in all for `children` to exit."""
    deadline = time.monotonic() + seconds
    for child in children:
        if child.proc is None:
            continue
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(max(0.0, deadline - time.monotonic()))
