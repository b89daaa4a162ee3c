#!/usr/bin/env python3
"""Signed webhooks while unsigned 25 MiB bodies arrive: what someone who cannot sign a webhook can
do to the API.

For each kind of flood (none, nested arrays, plain large JSON), a fresh `ciserver serve` (with its
own Redis and data dir) gets signed GitHub pushes one after the other, each for a new commit, while
FLOODERS processes (not threads: they must not slow the client that measures) post unsigned 25 MiB
bodies to the shared /webhooks/github URL without pause.
Prints a table: latency of the signed pushes (p50, p95, max), how many unsigned bodies were
answered and with what, and the API's peak resident memory (VmHWM).

Only the shared URL is used, so the same script measures releases that have no per-project URL.
Run from the project root; `--source DIR` runs the `ciserver` found in DIR instead (e.g. a scratch
checkout of an older commit), with this script's own test helpers:

    .venv/bin/python benchmarks/webhook_flood.py [--pushes 20] [--flooders 2] [--source DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ciserver.ports import free_port  # noqa: E402
from tests.support.payloads import github_headers, github_push_body  # noqa: E402
from tests.support.services import RedisServer  # noqa: E402

MIB = 1024 * 1024
SECRET = "a-webhook-secret-for-the-benchmark"


def nested_arrays(size: int) -> bytes:
    """Arrays nested 500 deep, side by side: each pair of brackets becomes a list when parsed."""
    unit = b"[" * 500 + b"]" * 500
    return b"[" + b",".join([unit] * ((size - 2) // (len(unit) + 1))) + b"]"


def plain_json(size: int) -> bytes:
    """Commit-like objects, as a very large push would list them."""
    item = b'{"id": "0123456789abcdef0123456789abcdef01234567", "added": ["a.txt", "b/c.py"], "n": 12345}'
    return (
        b'{"repository": {"full_name": "octo/other"}, "commits": ['
        + b", ".join([item] * ((size - 64) // (len(item) + 2)))
        + b"]}"
    )


FLOODS = {"none": None, "nested arrays": nested_arrays, "plain large JSON": plain_json}


def peak_rss_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else -1


class Api:
    """`ciserver serve` of `source`, on a fresh data dir, with one registered project."""

    def __init__(self, source: Path, root: Path, redis_url: str) -> None:
        self.port = free_port()
        self.env = dict(
            os.environ,
            PYTHONPATH=str(source),
            CISERVER_DATA_DIR=str(root / "data"),
            CISERVER_REDIS_URL=redis_url,
        )
        self.source = source
        self.cli("project", "add", "octo/hello", "--repo", "https://git.example.org/octo/hello.git",
                 "--forge", "github", "--secret", SECRET)  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ciserver", "serve", "--port", str(self.port)],
            env=self.env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                httpx.get(self.url + "/healthz")
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("ciserver serve did not answer")

    def cli(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "ciserver", *args], env=self.env, cwd=self.source, check=True,
                       capture_output=True)  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def flood(url: str, body: bytes, stop: EventType, answers: Queue[Counter[str]]) -> None:
    """Post `body` unsigned until told to stop; then report the answers' status codes."""
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push",
               "X-Hub-Signature-256": "sha256=" + "0" * 64}  # fmt: skip
    counted = Counter[str]()
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            try:
                counted[str(client.post(url, content=body, headers=headers).status_code)] += 1
            except httpx.HTTPError as exc:
                counted[type(exc).__name__] += 1
    answers.put(counted)


def signed_pushes(url: str, count: int) -> list[float]:
    """Seconds each signed push of a new commit took to be answered 202, one after the other."""
    latencies = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for n in range(count):
            body = github_push_body("octo/hello", f"{n + 1:040x}")
            start = time.perf_counter()
            response = client.post("/webhooks/github", content=body, headers=github_headers(body, SECRET))
            latencies.append(time.perf_counter() - start)
            if response.status_code != 202:
                raise RuntimeError(f"signed push {n}: {response.status_code} {response.text}")
            time.sleep(0.05)
    return latencies


def scenario(
    source: Path, redis_url: str, make_body: Callable[[int], bytes] | None, pushes: int, flooders: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ciserver-flood-") as root:
        api = Api(source, Path(root), redis_url)
        stop, answers = multiprocessing.Event(), multiprocessing.Queue()
        procs = []
        if make_body is not None:
            body = make_body(25 * MIB)
            args = (api.url + "/webhooks/github", body, stop, answers)
            procs = [multiprocessing.Process(target=flood, args=args) for _ in range(flooders)]
            for proc in procs:
                proc.start()
            time.sleep(1.0)  # the flood is under way before the first signed push
        try:
            latencies = sorted(signed_pushes(api.url, pushes))
        finally:
            stop.set()
            counted = sum((answers.get(timeout=180) for _ in procs), Counter[str]())
            for proc in procs:
                proc.join()
            peak = peak_rss_mib(api.proc.pid)
            api.stop()
    return {
        "p50": statistics.median(latencies),
        "p95": latencies[max(0, round(0.95 * len(latencies)) - 1)],
        "max": latencies[-1],
        "answers": ", ".join(f"{count} x {code}" for code, count in sorted(counted.items())) or "-",
        "peak": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=20, help="signed pushes per kind of flood")
    parser.add_argument("--flooders", type=int, default=2, help="threads posting unsigned bodies")
    parser.add_argument("--source", type=Path, default=ROOT, help="the project checkout to run")
    args = parser.parse_args()
    source = args.source.resolve()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    print(f"source: {source}{f' (this checkout at {commit})' if source == ROOT else ''}; "
          f"{args.pushes} signed pushes, {args.flooders} flooders of 25 MiB bodies")  # fmt: skip
    print()
    print("| unsigned flood | signed push p50 | p95 | max | unsigned bodies answered | API peak RSS |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="ciserver-flood-redis-") as redis_dir:
        redis = RedisServer(Path(redis_dir)).start()
        try:
            for name, make_body in FLOODS.items():
                r = scenario(source, redis.url, make_body, args.pushes, args.flooders)
                times = " | ".join(f"{r[key] * 1000:.0f} ms" for key in ("p50", "p95", "max"))
                print(f"| {name} | {times} | {r['answers']} | {r['peak']} MiB |", flush=True)
        finally:
            redis.kill()


if __name__ == "__main__":
    main()
