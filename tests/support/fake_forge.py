"""A forge's API on loopback: a real HTTP server in a thread that records every request and answers as
told (201 by default; a 5xx, a 401, or no answer for a while), for the commit status reporter."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Call:
    """One request the forge received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Answer:
    status: int = 201
    body: str = '{"id": 1}'
    delay: float = 0.0  # seconds before answering: a forge that hangs


class FakeForge:
    """Answers come from `script` in order (then `default`); `calls` holds what was asked."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.script: list[Answer] = []
        self.default = Answer()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        forge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with forge._lock:
                    forge.calls.append(
                        Call("POST", self.path, dict(self.headers.items()), json.loads(raw or b"{}"))
                    )
                    answer = forge.script.pop(0) if forge.script else forge.default
                if answer.delay:
                    time.sleep(answer.delay)
                body = answer.body.encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def states(self, context: str) -> list[str]:
        """The states sent for `context`, in order (GitLab's `name` is its context)."""
        with self._lock:
            return [
                call.body["state"]
                for call in self.calls
                if call.body.get("context", call.body.get("name")) == context
            ]

    def wait_for(self, predicate: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                calls = list(self.calls)
            if predicate(calls):
                return
            time.sleep(0.05)
        raise AssertionError(f"the forge never got what was expected; it got: {self.calls}")

    def start(self) -> FakeForge:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fake_forge() -> Iterator[FakeForge]:
    forge = FakeForge().start()
    try:
        yield forge
    finally:
        forge.stop()
