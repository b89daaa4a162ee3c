"""A loopback port free right now, for a child process (Redis, nginx's control server) to listen on."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1; another process could take it before ours does,
    which is why callers start their listener at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
