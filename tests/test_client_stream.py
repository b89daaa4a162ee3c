"""The client's streams when the connection drops: they connect again with Last-Event-ID and miss
nothing, as a browser's EventSource does; a refusal is one clear error, not a retry loop. Served by a
small SSE server on loopback that cuts each connection after one frame."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from ciserver.client import Client, ClientError, LogEnd, StreamOpened

FRAMES = {
    "/api/v1/events": [
        'id: 1\nevent: build\ndata: {"id": 7, "status": "running"}\n\n',
        ': keep-alive\n\nid: 2\nevent: job\ndata: {"id": 9, "status": "success"}\n\n',
        'id: 3\nevent: build\ndata: {"id": 7, "status": "success"}\n\n',
    ],
    "/api/v1/jobs/9/log/stream": [
        'id: 6\nevent: log\ndata: {"offset": 0, "text": "line 1\\n"}\n\n',
        'id: 12\nevent: log\ndata: {"offset": 6, "text": "line 2\\n"}\n\n',
        'event: end\ndata: {"status": "failed"}\n\n',
    ],
}
RESUME = {"/api/v1/events": ["", "1", "2"], "/api/v1/jobs/9/log/stream": ["", "6", "12"]}


class CuttingServer(BaseHTTPRequestHandler):
    """Sends the frame after the Last-Event-ID it is given, then closes the connection."""

    seen: ClassVar[list[tuple[str, str, str]]] = []

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.seen.append((path, self.headers.get("Last-Event-ID", ""), self.headers.get("Authorization", "")))
        if self.headers.get("Authorization") != "Bearer good":
            body = b'{"detail": "Authorization: the token is unknown, revoked or expired"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        index = RESUME[path].index(self.headers.get("Last-Event-ID", ""))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(FRAMES[path][index].encode())
        self.close_connection = True

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    CuttingServer.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), CuttingServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_event_stream_resumes_after_the_last_event_seen(server: str) -> None:
    got: list[object] = []
    with Client(server, "good") as client:
        for item in client.events("acme/app"):
            got.append(
                item if isinstance(item, StreamOpened) else (item.id, item.event, item.json()["status"])
            )
            if len(got) == 6:
                break
    assert got == [
        StreamOpened(),
        ("1", "build", "running"),
        StreamOpened(),  # the caller re-reads what it follows: nothing falls between two connections
        ("2", "job", "success"),
        StreamOpened(),
        ("3", "build", "success"),
    ]
    assert [resume for _, resume, _ in CuttingServer.seen] == ["", "1", "2"]


def test_a_followed_log_resumes_at_its_byte_offset_and_ends_with_the_job_s_status(server: str) -> None:
    with Client(server, "good") as client:
        assert list(client.follow_log(9)) == ["line 1\n", "line 2\n", LogEnd("failed")]
    assert [resume for _, resume, _ in CuttingServer.seen] == ["", "6", "12"]


def test_a_refused_stream_is_one_error_naming_the_token_not_a_retry_loop(server: str) -> None:
    with (
        Client(server, "bad") as client,
        pytest.raises(ClientError, match=r"refused the token \(401: Authorization"),
    ):
        next(client.events())
    assert len(CuttingServer.seen) == 1
