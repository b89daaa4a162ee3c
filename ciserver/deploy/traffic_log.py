"""The canary's figures: requests and 5xx answers per upstream, read from nginx's access log.

The router's log format writes `$msec $upstream_addr $status $request_time` per request, one file
per environment. The analysis remembers where the file ended when a step began and counts only
what came after.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_READ = 64 * 1024 * 1024  # a step's worth of log lines; more is read on the next look


@dataclass(frozen=True)
class Figures:
    requests: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class AccessLog:
    """One environment's access log, read from a byte position on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def position(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def figures(self, since: int, upstream: str) -> Figures:
        """Requests answered by `upstream` after byte `since`, and how many were 5xx."""
        try:
            with self.path.open("rb") as log:
                if log.seek(0, 2) < since:
                    since = 0  # the log was rotated: everything in the new file is recent
                log.seek(since)
                data = log.read(MAX_READ)
        except FileNotFoundError:
            return Figures(0, 0)
        requests = errors = 0
        for line in data.split(b"\n"):
            fields = line.split(b" ")
            # A retry on another upstream writes "a, b"; we never retry, so one address is one answer.
            if len(fields) < 3 or fields[1].decode(errors="replace") != upstream:
                continue
            requests += 1
            if fields[2].startswith(b"5"):
                errors += 1
        return Figures(requests, errors)
