"""The nginx router with a real nginx: weights split real requests as asked, and shifting traffic
by a reload loses none of them."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ciserver.deploy.router import Backend, NginxRouter, RouterError, upstream_config
from tests.helpers import free_port, start_nginx

pytestmark = pytest.mark.e2e


def backend(answer: str) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this, each answer waits ~40 ms on Nagle.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            body = answer.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxRouter]:
    root = tmp_path / "nginx"
    proc, reload = start_nginx(root)
    try:
        yield NginxRouter(root, reload)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def old_and_new() -> Iterator[tuple[str, str]]:
    old, old_address = backend("old")
    new, new_address = backend("new")
    yield old_address, new_address
    old.shutdown()
    new.shutdown()


def wait_for(url: str, answer: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).text == answer:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered {answer!r}")


def test_five_percent_of_the_requests_reach_the_canary(
    nginx: NginxRouter, old_and_new: tuple[str, str]
) -> None:
    old, new = old_and_new
    listen = f"127.0.0.1:{free_port()}"
    nginx.set_weights("staging", listen, [Backend(old, 100)])
    wait_for(f"http://{listen}/", "old")
    nginx.set_weights("staging", listen, [Backend(old, 95), Backend(new, 5)])
    wait_for(f"http://{listen}/", "new")  # the reload has taken effect once the canary answers
    with httpx.Client(base_url=f"http://{listen}") as client:
        answers = Counter(client.get("/").text for _ in range(1000))
    assert 30 <= answers["new"] <= 70, answers
    assert answers["old"] + answers["new"] == 1000
    log = (nginx.root / "logs" / "staging.access.log").read_text()
    assert new in log and old in log


def test_switching_all_traffic_under_load_loses_no_request(
    nginx: NginxRouter, old_and_new: tuple[str, str]
) -> None:
    old, new = old_and_new
    listen = f"127.0.0.1:{free_port()}"
    nginx.set_weights("production", listen, [Backend(old, 100)])
    wait_for(f"http://{listen}/", "old")
    failures: list[str] = []
    answers: Counter[str] = Counter()
    done = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=f"http://{listen}", timeout=5) as client:
            while not done.is_set():
                try:
                    response = client.get("/")
                    answers[response.text] += 1
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    client_thread = threading.Thread(target=load)
    client_thread.start()
    for backends in ([Backend(new, 100)], [Backend(old, 100)], [Backend(new, 100)]):
        time.sleep(0.3)
        nginx.set_weights("production", listen, backends)
    time.sleep(0.5)
    done.set()
    client_thread.join(10)
    assert failures == []
    assert answers["old"] > 0 and answers["new"] > 0
    assert httpx.get(f"http://{listen}/").text == "new"


def test_bad_weights_and_addresses_are_refused_before_nginx_sees_them(nginx: NginxRouter) -> None:
    with pytest.raises(RouterError, match="no backend has a weight above 0"):
        upstream_config("staging", "127.0.0.1:9001", [Backend("127.0.0.1:8000", 0)])
    with pytest.raises(RouterError, match="not host:port"):
        nginx.set_weights("staging", "127.0.0.1:9001", [Backend("evil; include /etc/passwd", 100)])
    with pytest.raises(RouterError, match="environment"):
        nginx.set_weights("../x", "127.0.0.1:9001", [Backend("127.0.0.1:8000", 100)])
    assert list(nginx.environments_dir.iterdir()) == []


def test_a_configuration_nginx_refuses_is_rolled_back(nginx: NginxRouter) -> None:
    nginx.set_weights("staging", f"127.0.0.1:{free_port()}", [Backend("127.0.0.1:1", 100)])
    before = (nginx.environments_dir / "staging.conf").read_text()
    broken = NginxRouter(nginx.root, "nginx -p /nonexistent -c /nonexistent/nginx.conf -s reload")
    with pytest.raises(RouterError, match="failed"):
        broken.set_weights("staging", f"127.0.0.1:{free_port()}", [Backend("127.0.0.1:2", 100)])
    assert (nginx.environments_dir / "staging.conf").read_text() == before
