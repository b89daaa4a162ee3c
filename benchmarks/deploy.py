#!/usr/bin/env python3
"""Green to live, measured: pushes of the sample service (examples/hello) whose pipeline builds its
image and deploys it to staging by blue-green, under a client that sends requests without pause,
against the same switch done by hand (docker run, health poll, an nginx file, nginx -s reload).

Prints a table: the build, then the time from the build going green to staging answering the new
version through nginx (median over the pushes), and the requests sent meanwhile with how many
failed. Starts its own `ciserver up` (with its private nginx) on a fresh data dir. From the project
root, once `scripts/build-test-images` has run:

    .venv/bin/python benchmarks/deploy.py [--pushes 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from push_to_green import SECRET, Server  # noqa: E402

from ciserver.deploy.router import Backend, NginxRouter  # noqa: E402
from ciserver.ports import free_port  # noqa: E402
from tests.support.git import commit, make_repo  # noqa: E402

EXAMPLE = ROOT / "examples" / "hello"


def pipeline(listen: int) -> str:
    return f"""\
stages: [build]
jobs:
  package: {{stage: build, image_build: {{context: ., build_args: {{VERSION: "${{CI_COMMIT_SHORT_SHA}}"}}}}}}
environments:
  staging: {{auto: true, listen: "127.0.0.1:{listen}", strategy: {{blue_green: {{keep_previous: 5s}}}}}}
service: {{port: 8000, health: /healthz}}
"""


class Load:
    """One client sending GET / through nginx without pause, counting answers and failures."""

    def __init__(self, url: str) -> None:
        self.url, self.sent, self.failed, self.last = url, 0, 0, ""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.done.is_set():
                try:
                    response = client.get(self.url)
                    self.last = response.text.strip()
                    self.failed += response.status_code != 200
                except httpx.HTTPError:
                    self.failed += 1
                self.sent += 1

    def wait_for(self, answer: str, timeout: float = 120) -> float:
        start = time.perf_counter()
        while self.last != answer:
            if time.perf_counter() - start > timeout:
                raise SystemExit(f"{self.url} never answered {answer!r} (last: {self.last!r})")
            time.sleep(0.005)
        return time.perf_counter()


def by_hand(image: str, router: NginxRouter, listen: str, color: str, load: Load, version: str) -> float:
    """The switch without ciserver: start the container, poll its health, route to it, reload."""
    start = time.perf_counter()
    name = f"bench-hand-{color}"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    run = ["docker", "run", "-d", "--name", name, "-e", f"VERSION={version}", "-p", "127.0.0.1::8000", image]
    subprocess.run(run, check=True, capture_output=True)
    port = subprocess.run(["docker", "port", name, "8000/tcp"], check=True, capture_output=True,
                          text=True).stdout.split(":")[-1].strip()  # fmt: skip
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.01)
    router.set_weights("bench-hand", listen, [Backend(f"127.0.0.1:{port}", 100)])
    return load.wait_for(f"hello {version}") - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ciserver-deploy-bench-"))
    staging = free_port()
    repo = work / "repo"
    make_repo(repo, {name: (EXAMPLE / name).read_text() for name in ("app.py", "Dockerfile")})
    server = Server(work)
    builds, deploys = [], []
    load = Load(f"http://127.0.0.1:{staging}/")
    try:
        server.cli(
            "project", "add", "bench/hello", "--repo", str(repo), "--forge", "github", "--secret", SECRET
        )
        for n in range(args.pushes + 1):
            sha = commit(repo, {"pipelines.yml": pipeline(staging), "NOTE": str(n)}, f"push {n}")
            build_time = server.push_and_wait("bench/hello", sha, poll=0.05)
            green = time.perf_counter()
            if n == 0:
                load.thread.start()
            live = load.wait_for(f"hello {sha[:8]}")
            if n == 0:  # the first push only sets staging up; the others are switches under load
                load.sent = load.failed = 0
                continue
            builds.append(build_time)
            deploys.append(live - green)
        sent, failed = load.sent, load.failed
        root = work / "data" / "nginx"
        router = NginxRouter(root, f"nginx -p {root} -c {root / 'nginx.conf'} -s reload")
        hand_listen = f"127.0.0.1:{free_port()}"
        hand_load = Load(f"http://{hand_listen}/")
        image = subprocess.run(["docker", "images", "-q", "ciserver/bench-hello"], capture_output=True,
                               text=True).stdout.split()[0]  # fmt: skip
        hand = []
        hand_load.thread.start()
        for n in range(args.pushes + 1):
            took = by_hand(image, router, hand_listen, ("blue", "green")[n % 2], hand_load, f"hand{n}")
            if n == 0:
                hand_load.sent = hand_load.failed = 0
                continue
            hand.append(took)
        hand_load.done.set()
    finally:
        load.done.set()
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(60)
        for name in ("bench-hand-blue", "bench-hand-green"):
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        label = f"label=ciserver.deploy={work / 'data'}"
        for kind, listing in (("container", ["ps", "-aq"]), ("network", ["network", "ls", "-q"])):
            leftovers = subprocess.run(["docker", *listing, "--filter", label], capture_output=True,
                                       text=True).stdout.split()  # fmt: skip
            if leftovers:
                subprocess.run(["docker", kind, "rm", *(["-f"] if kind == "container" else []), *leftovers],
                               capture_output=True)  # fmt: skip
    print("| pushes | build, median | green to live, median | by hand, median | ratio | requests | failed |")
    print("|---|---|---|---|---|---|---|")
    ratio = statistics.median(deploys) / statistics.median(hand)
    print(f"| {args.pushes} | {statistics.median(builds):.2f} s | {statistics.median(deploys):.2f} s "
          f"| {statistics.median(hand):.2f} s | {ratio:.2f}x | {sent} | {failed} |")  # fmt: skip
    print(f"by hand under load: {hand_load.sent} requests, {hand_load.failed} failed")


if __name__ == "__main__":
    main()
