"""The nginx router with a real nginx: weights split real requests as asked, and shifting traffic
by a reload loses none of them."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ciserver.deploy.router import Backend, NginxRouter, RouterError, main_config, upstream_config
from ciserver.ports import free_port
from tests.support.services import start_nginx


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


@pytest.fixture
def held_address() -> Iterator[str]:
    """An address another process listens on, as nginx would find it at a reload."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield f"127.0.0.1:{held.getsockname()[1]}"


def test_a_listen_another_process_holds_fails_with_nginx_message_and_later_reloads_apply(
    nginx: NginxRouter, old_and_new: tuple[str, str], held_address: str
) -> None:
    old, new = old_and_new
    listen = f"127.0.0.1:{free_port()}"
    nginx.set_weights("staging", listen, [Backend(old, 100)])
    wait_for(f"http://{listen}/", "old")
    # nginx -t passes and `nginx -s reload` exits 0: only the master's log says it kept the old one.
    with pytest.raises(RouterError, match=re.escape(f"bind() to {held_address} failed (98: Address already")):
        nginx.set_weights("production", held_address, [Backend(new, 100)])
    assert not (nginx.environments_dir / "production.conf").exists()
    # Moving an environment onto the held address keeps it where it was, on its previous weights.
    before = (nginx.environments_dir / "staging.conf").read_text()
    with pytest.raises(RouterError, match="Address already in use"):
        nginx.set_weights("staging", held_address, [Backend(new, 100)])
    assert (nginx.environments_dir / "staging.conf").read_text() == before
    assert httpx.get(f"http://{listen}/").text == "old"
    # And nginx still takes what comes next.
    nginx.set_weights("staging", listen, [Backend(new, 100)])
    wait_for(f"http://{listen}/", "new")


def test_an_address_another_environment_listens_on_is_refused(
    nginx: NginxRouter, old_and_new: tuple[str, str]
) -> None:
    old, new = old_and_new
    port = free_port()
    nginx.set_weights("theirs", f"127.0.0.1:{port}", [Backend(old, 100)])
    wait_for(f"http://127.0.0.1:{port}/", "old")
    for spelling in (f"127.0.0.1:{port}", f"localhost:{port}", f"127.0.0.01:{port}", f"0.0.0.0:{port}"):
        with pytest.raises(RouterError, match=f"theirs.conf already listens on 127.0.0.1:{port}"):
            nginx.set_weights("mine", spelling, [Backend(new, 100)])
    assert not (nginx.environments_dir / "mine.conf").exists()
    assert httpx.get(f"http://127.0.0.1:{port}/").text == "old"


def test_a_change_left_half_done_by_a_killed_worker_is_undone_by_the_next_one(
    nginx: NginxRouter, old_and_new: tuple[str, str], held_address: str
) -> None:
    old, new = old_and_new
    # A worker writes an environment nginx cannot bind and is killed before it can take it back.
    script = (
        "import sys, pathlib; from ciserver.deploy.router import Backend, NginxRouter; "
        "NginxRouter(pathlib.Path(sys.argv[1]), 'sleep 60')"
        f".set_weights('production', {held_address!r}, [Backend({new!r}, 100)])"
    )
    worker = subprocess.Popen([sys.executable, "-c", script, str(nginx.root)])
    try:
        deadline = time.monotonic() + 10
        while not (nginx.environments_dir / "production.conf").exists():
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.02)
    finally:
        worker.kill()
        worker.wait()
    listen = f"127.0.0.1:{free_port()}"
    nginx.set_weights("staging", listen, [Backend(old, 100)])
    wait_for(f"http://{listen}/", "old")
    assert not (nginx.environments_dir / "production.conf").exists()


def test_an_operators_own_nginx_is_confirmed_the_same_way(
    tmp_path: Path, old_and_new: tuple[str, str], held_address: str
) -> None:
    old, new = old_and_new
    # Its own prefix, pid file and error log; it includes ciserver's directory and reloads on SIGHUP.
    operator, root = tmp_path / "operator", tmp_path / "ciserver"
    for directory in (operator / "logs", operator / "temp", root / "logs", root / "environments"):
        directory.mkdir(parents=True)
    config = main_config(operator).replace(f"{operator}/environments", f"{root}/environments")
    (operator / "nginx.conf").write_text(config)
    proc = subprocess.Popen(["nginx", "-p", str(operator), "-c", str(operator / "nginx.conf")])
    try:
        while not (operator / "nginx.pid").exists():
            assert proc.poll() is None
            time.sleep(0.05)
        router = NginxRouter(root, f"sh -c 'kill -HUP $(cat {operator}/nginx.pid)'")
        listen = f"127.0.0.1:{free_port()}"
        router.set_weights("staging", listen, [Backend(old, 100)])
        wait_for(f"http://{listen}/", "old")
        # Its error log is not ours to read: the change fails once nginx has not taken it in time.
        with pytest.raises(RouterError, match="did not take the new configuration within"):
            router.set_weights("production", held_address, [Backend(new, 100)])
        assert not (router.environments_dir / "production.conf").exists()
        router.set_weights("staging", listen, [Backend(new, 100)])
        wait_for(f"http://{listen}/", "new")
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_environment_takes_over_its_file_of_an_earlier_release_and_no_other(
    nginx: NginxRouter, old_and_new: tuple[str, str]
) -> None:
    old, new = old_and_new
    staging, production = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    # Files as an earlier release named them, without the digest.
    nginx.set_weights("acme-hello-staging", staging, [Backend(old, 100)])
    nginx.set_weights("acme-hello-production", production, [Backend(old, 100)])
    nginx.set_weights("acme-hello-staging-0123456789abcdef", staging, [Backend(new, 100)],
                      replaces=["acme-hello-staging"])  # fmt: skip
    wait_for(f"http://{staging}/", "new")
    assert not (nginx.environments_dir / "acme-hello-staging.conf").exists()
    # A file that merely carries the old name asked for, listening elsewhere, is not taken.
    nginx.set_weights("acme-hello-p-0123456789abcdef", f"127.0.0.1:{free_port()}", [Backend(new, 100)],
                      replaces=["acme-hello-production"])  # fmt: skip
    assert httpx.get(f"http://{production}/").text == "old"
