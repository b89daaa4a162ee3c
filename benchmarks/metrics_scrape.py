#!/usr/bin/env python3
"""What one Prometheus scrape of /metrics costs the database as the history grows.

The collector (ciserver.metrics) counts builds, jobs and deployments by status and buckets the
durations of every ended build and job in SQL at each scrape. This fills a fresh SQLite database
(or the PostgreSQL at --database-url) with --builds builds of --jobs-per-build jobs each, ended,
then times the database part of a scrape after a change (everything counted) and on an idle server
(no event since the scrape before, so the counts are kept). Run from the project root:

    .venv/bin/python benchmarks/metrics_scrape.py [--builds 100000] [--jobs-per-build 3] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert

from ciserver.config import Settings
from ciserver.metrics import StateCollector
from ciserver.states import Status
from ciserver.store.db import engine_for
from ciserver.store.models import Build, Job, Project

STATES = (Status.success, Status.success, Status.success, Status.failed, Status.error, Status.canceled)


def fill(url: str, builds: int, jobs_per_build: int) -> None:
    engine = engine_for(url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(Project),
            [{"name": "octo/app", "forge": "github", "repo_url": "https://x.test/a.git", "secret": "s"}],
        )
        batch = 10_000
        for first in range(0, builds, batch):
            rows = []
            jobs = []
            for n in range(first, min(first + batch, builds)):
                begun = start + timedelta(seconds=n)
                status = STATES[n % len(STATES)]
                rows.append(
                    {"id": n + 1, "project_id": 1, "ref": "refs/heads/main", "branch": "main",
                     "sha": "a" * 40, "status": status, "started_at": begun,
                     "finished_at": begun + timedelta(seconds=n % 900)}
                )  # fmt: skip
                for position in range(jobs_per_build):
                    jobs.append(
                        {"build_id": n + 1, "position": position, "name": f"j{position}", "stage": "test",
                         "image": "busybox", "script": [], "env": {}, "timeout": 60, "after": [],
                         "status": status, "started_at": begun,
                         "finished_at": begun + timedelta(seconds=(n + position) % 600)}
                    )  # fmt: skip
            connection.execute(insert(Build), rows)
            connection.execute(insert(Job), jobs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--builds", type=int, default=100_000)
    parser.add_argument("--jobs-per-build", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", help="an empty database; default: SQLite in a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/ciserver.db"
        began = time.perf_counter()
        fill(url, args.builds, args.jobs_per_build)
        print(f"filled {args.builds} builds, {args.builds * args.jobs_per_build} jobs in "
              f"{time.perf_counter() - began:.1f} s")  # fmt: skip
        settings = Settings(data_dir=Path(tmp), database_url=url)
        full, idle = [], []
        for _ in range(args.runs):
            collector = StateCollector(settings)  # a new one counts everything
            began = time.perf_counter()
            families = list(collector._database())
            full.append(time.perf_counter() - began)
            began = time.perf_counter()
            list(collector._database())  # no event since: the counts of the scrape before
            idle.append(time.perf_counter() - began)
        assert families, "the database did not answer"
        for label, times in (("after a change", full), ("idle (no new event)", idle)):
            print(f"database part of a scrape, {label}: median {statistics.median(times) * 1000:.0f} ms, "
                  f"min {min(times) * 1000:.0f} ms over {args.runs} runs")  # fmt: skip


if __name__ == "__main__":
    main()
