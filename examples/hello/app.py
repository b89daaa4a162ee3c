"""hello: the sample service ciserver's walkthrough builds, tests and deploys.

GET / answers "hello <version>", GET /healthz answers "ok". HELLO_FAIL=1 makes / answer 500, to
show a canary that misbehaves. Only the standard library, so the image needs nothing but Python.
"""

from __future__ import annotations

import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("VERSION", "dev")


def answer(path: str, failing: bool) -> tuple[int, str]:
    """Status and body for a GET of `path`."""
    if path == "/healthz":
        return 200, "ok\n"
    if path == "/":
        return (500, "failing on purpose\n") if failing else (200, f"hello {VERSION}\n")
    return 404, "not found\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this each answer on a kept-alive
        # connection (nginx keeps them) waits ~40 ms for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        status, body = answer(self.path, os.environ.get("HELLO_FAIL") == "1")
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
