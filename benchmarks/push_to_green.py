#!/usr/bin/env python3
"""Push to green, measured: a signed GitHub push of a fresh commit whose pipeline is two sequential
busybox jobs, against the same work done by hand (a local clone and two `docker run --rm`).

Prints a table: latency (median and p90 over sequential builds) and throughput (builds a minute,
two at a time). Starts its own `ciserver up` with a fresh data dir. Run from the project root:

    .venv/bin/python benchmarks/push_to_green.py [--builds 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ciserver.ports import free_port
from tests.support.engine import BUSYBOX
from tests.support.git import commit, git, make_repo
from tests.support.payloads import github_headers, github_push_body

SECRET = "s3cret-s3cret-s3cret"  # a webhook secret has 16 characters or more
PIPELINE = f"""\
image: {BUSYBOX}
stages: [test, build]
jobs:
  test: {{stage: test, script: ["true"]}}
  build: {{stage: build, script: ["true"]}}
"""


def by_hand(repo: Path, work: Path, n: int) -> float:
    """What a person (or a minimal script) does for one push: clone at the sha, run two containers."""
    start = time.perf_counter()
    target = work / f"hand-{n}"
    subprocess.run(["git", "clone", "-q", "--", str(repo), str(target)], check=True)
    for _ in range(2):
        subprocess.run(
            ["docker", "run", "--rm", "-v", f"{target}:/workspace", "-w", "/workspace", BUSYBOX, "true"],
            check=True,
        )
    return time.perf_counter() - start


class Server:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.env = dict(os.environ, CISERVER_DATA_DIR=str(root / "data"), CISERVER_ALLOW_LOCAL_REPOS="true")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ciserver", "up", "--port", str(self.port), "--workers", "2"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        for _ in range(300):
            try:
                self.http.get("/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        token = self.cli("token", "create", "--role", "viewer").splitlines()[-1]
        self.http.headers["Authorization"] = f"Bearer {token}"

    def cli(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "ciserver", *args], env=self.env, check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    def push_and_wait(self, name: str, sha: str, poll: float = 0.01) -> float:
        body = github_push_body(name, sha)
        start = time.perf_counter()
        response = self.http.post("/webhooks/github", content=body, headers=github_headers(body, SECRET))
        build_id = response.json()["build_id"]
        while True:
            status = self.http.get(f"/api/v1/builds/{build_id}").json()["status"]
            if status not in ("queued", "running"):
                assert status == "success", status
                return time.perf_counter() - start
            time.sleep(poll)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def fresh_commits(repo: Path, count: int) -> list[str]:
    return [commit(repo, {"n.txt": f"{i} {time.time()}\n"}, f"commit {i}") for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ciserver-bench-"))
    repos = [root / "repo-a", root / "repo-b"]
    for repo in repos:
        make_repo(repo, {"pipelines.yml": PIPELINE, "README": "bench\n"})

    hand_seq = [by_hand(repos[0], root, i) for i in range(args.builds)]
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: by_hand(repos[i % 2], root, 1000 + i), range(args.builds)))
    hand_rate = args.builds / (time.perf_counter() - start) * 60

    server = Server(root)
    try:
        for i, repo in enumerate(repos):
            server.cli(
                "project",
                "add",
                f"bench/r{i}",
                "--repo",
                str(repo),
                "--forge",
                "github",
                "--secret",
                SECRET,
            )
        server.push_and_wait("bench/r0", git(repos[0], "rev-parse", "HEAD"))  # warm: mirror clone
        server.push_and_wait("bench/r1", git(repos[1], "rev-parse", "HEAD"))
        ours_seq = [server.push_and_wait("bench/r0", sha) for sha in fresh_commits(repos[0], args.builds)]
        shas = [fresh_commits(repo, args.builds // 2) for repo in repos]
        jobs = [(f"bench/r{i % 2}", shas[i % 2][i // 2]) for i in range(args.builds)]
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            # Polled less often here: at 100 polls a second per client the benchmark itself would
            # take a good part of the two cores from the server it measures.
            list(pool.map(lambda job: server.push_and_wait(*job, poll=0.05), jobs))
        ours_rate = args.builds / (time.perf_counter() - start) * 60
    finally:
        server.stop()

    def row(name: str, seq: list[float], rate: float) -> str:
        p90 = statistics.quantiles(seq, n=10)[-1]
        return f"| {name} | {statistics.median(seq):.3f} s | {p90:.3f} s | {rate:.0f} |"

    print(f"push to green, two sequential busybox jobs, {args.builds} builds, {os.cpu_count()} cores")
    print("| | latency median | latency p90 | builds/min, two at a time |")
    print("|---|---|---|---|")
    print(row("by hand (git clone + 2 x docker run --rm)", hand_seq, hand_rate))
    print(row("ciserver (signed push -> build success)", ours_seq, ours_rate))
    ratio = statistics.median(ours_seq) / statistics.median(hand_seq)
    share = ours_rate / hand_rate
    print(f"\nciserver / by hand: latency {ratio:.2f}x (aim <= 1.2x), throughput {share:.0%} (aim >= 90%)")


if __name__ == "__main__":
    main()
