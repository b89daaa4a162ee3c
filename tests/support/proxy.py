"""A socket proxy in front of the Docker Engine, to make the engine unreachable for a moment."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path


class EngineProxy:
    """The Docker Engine's socket relayed through one of ours, which a test can take away and bring
    back: to the worker it is the engine becoming unreachable for a moment."""

    def __init__(self, path: Path) -> None:
        self.path = path
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        self.engine = host.removeprefix("unix://")
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []

    def up(self) -> None:
        self.path.unlink(missing_ok=True)
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(self.path))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.path.unlink(missing_ok=True)
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(self.engine)
            self.conns += [client, engine]
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
