#!/usr/bin/env python3
"""How soon a client of GET /api/v1/events sees a committed change, and what the stream costs the API.

One API (create_app under uvicorn, in this process) on a fresh SQLite database (or the PostgreSQL at
--database-url), --clients clients connected to the stream, and --changes build changes committed
one after another (--gap seconds apart), each in its own transaction as a worker commits it. For
each change: the time from its commit to its frame reaching every client. With --redis-url the
streams are woken by the commit's Redis message; without, only their fallback poll finds it. Also
the CPU time this process spent per change and client (the API's streams, the clients' parsing and
the commits together: an upper bound for the API's share).
Run from the project root:

    .venv/bin/python benchmarks/event_stream.py [--clients 10] [--changes 100] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import uvicorn

from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.event_bus import install_publisher
from ciserver.ports import free_port
from ciserver.store.builds import PushRecord, record_push
from ciserver.store.db import session_scope
from ciserver.store.events import ADDED
from ciserver.store.models import Project, Role
from tests.support.store import bearer, new_project


def listen(url: str, headers: dict[str, str], got: dict[int, float], opened: threading.Event) -> None:
    with httpx.Client(timeout=60) as client, client.stream("GET", url, headers=headers) as response:
        opened.set()
        for line in response.iter_lines():
            if line.startswith("data:"):
                got[json.loads(line[5:])["event_id"]] = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.05)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp()) / "data"
    settings = Settings(data_dir=data, database_url=args.database_url, redis_url=args.redis_url)
    app = create_app(settings, outbox=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    install_publisher(args.redis_url)
    with session_scope(settings.db_url) as session:
        project_id = new_project(session).id
    headers = bearer(settings, Role.viewer)
    received: list[dict[int, float]] = [{} for _ in range(args.clients)]
    for got in received:
        opened = threading.Event()
        target = f"http://127.0.0.1:{port}/api/v1/events"
        threading.Thread(target=listen, args=(target, headers, got, opened), daemon=True).start()
        opened.wait(10)

    committed: dict[int, float] = {}
    cpu = time.process_time()
    for n in range(args.changes):
        push = PushRecord(
            ref="refs/heads/main", branch="main", tag=None, sha=f"{n:040x}", before=None,
            message="m", author="a", changed_files=None, default_branch="main",
        )  # fmt: skip
        with session_scope(settings.db_url) as session:
            record_push(session, session.get_one(Project, project_id), push, forge="x", delivery_id=None)
            session.flush()
            event_id = session.info[ADDED]
        committed[event_id] = time.perf_counter()
        time.sleep(args.gap)
    deadline = time.monotonic() + 10
    while any(len(got) < args.changes for got in received) and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = time.process_time() - cpu
    delays = [(got[e] - at) * 1000 for got in received for e, at in committed.items() if e in got]
    missing = args.changes * args.clients - len(delays)
    woken = "Redis wake-up" if args.redis_url else "fallback poll only"
    print(f"{args.clients} clients, {args.changes} changes {args.gap * 1000:.0f} ms apart, {woken}:")
    quantiles = statistics.quantiles(delays, n=20)
    print(
        f"  commit to client: median {statistics.median(delays):.1f} ms, p95 {quantiles[18]:.1f} ms, "
        f"max {max(delays):.1f} ms; {missing} frames missing"
    )
    per = cpu / args.changes / args.clients * 1000
    print(f"  CPU of this process (API, clients, commits): {cpu:.2f} s, {per:.2f} ms per change and client")
    server.should_exit = True


if __name__ == "__main__":
    main()
