#!/usr/bin/env python3
"""What a routing change costs: NginxRouter.set_weights on a private nginx, switching one environment
between two backends while a client sends requests without pause, then a change nginx cannot apply
(a listen address another process holds).

Prints a table: the time of one change (median and 95th percentile over --changes), the time until
the refused change returns (and whether it was refused at all), and the requests sent meanwhile with
how many failed. From the project root:

    .venv/bin/python benchmarks/router.py [--changes 50]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ciserver.deploy.router import Backend, NginxRouter, RouterError  # noqa: E402
from ciserver.ports import free_port  # noqa: E402
from tests.support.services import start_nginx  # noqa: E402


def backend(answer: str) -> str:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}"


class Load(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.sent, self.failed = url, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.done.is_set():
                try:
                    self.failed += client.get(self.url).status_code != 200
                except httpx.HTTPError:
                    self.failed += 1
                self.sent += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ciserver-router-bench-")) / "nginx"
    nginx, reload = start_nginx(root)
    router = NginxRouter(root, reload)
    blue, green = backend("blue"), backend("green")
    listen = f"127.0.0.1:{free_port()}"
    router.set_weights("bench", listen, [Backend(blue, 100)])
    time.sleep(0.5)
    load = Load(f"http://{listen}/")
    load.start()
    times = []
    try:
        for n in range(args.changes):
            start = time.perf_counter()
            router.set_weights("bench", listen, [Backend((green, blue)[n % 2], 100)])
            times.append(time.perf_counter() - start)
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen()
            start = time.perf_counter()
            try:
                router.set_weights("held", f"127.0.0.1:{held.getsockname()[1]}", [Backend(blue, 100)])
                refused = "no"
            except RouterError:
                refused = "yes"
            refusal = time.perf_counter() - start
        time.sleep(0.5)
    finally:
        load.done.set()
        load.join()
        nginx.terminate()
        nginx.wait(10)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h"], capture_output=True, text=True
    )
    p95 = statistics.quantiles(times, n=20)[-1]
    print("| code | changes | change, median | change, p95 | refused change | refused? | requests | failed |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {head.stdout.strip() or ROOT.name} | {args.changes} | {statistics.median(times) * 1000:.0f} ms "
          f"| {p95 * 1000:.0f} ms | {refusal:.2f} s | {refused} | {load.sent} | {load.failed} |")  # fmt: skip


if __name__ == "__main__":
    main()
