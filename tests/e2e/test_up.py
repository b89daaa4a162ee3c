"""`ciserver up` as an operator runs it: its private Redis and nginx start under the data dir,
nginx routes what the router writes, and SIGTERM stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ciserver.deploy.router import Backend, NginxRouter
from ciserver.ports import free_port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_starts_a_private_nginx_that_routes_and_stops_with_it(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CISERVER_")}
    env["CISERVER_DATA_DIR"] = str(data)
    up = subprocess.Popen(
        [sys.executable, "-m", "ciserver", "up", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        root = data / "nginx"
        nginx_pid = int((root / "nginx.pid").read_text())
        assert alive(nginx_pid)

        api = f"127.0.0.1:{port}"  # the API itself stands in for a deployed service
        listen = f"127.0.0.1:{free_port()}"
        router = NginxRouter(root, f"nginx -p {root} -c {root / 'nginx.conf'} -s reload")
        router.set_weights("staging", listen, [Backend(api, 100)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{listen}/healthz").json()["status"] == "ok":
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("nginx never routed to the environment")
        # nginx logs a request once its answer has gone out: the client may read it a moment sooner.
        log = root / "logs" / "staging.access.log"
        deadline = time.monotonic() + 5
        while api not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api in log.read_text()
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
    assert up.returncode == 0
    assert not alive(nginx_pid)
