#!/usr/bin/env python3
"""What the commit status reporter costs an API process, and how soon a forge hears of a change.

The reporter (ciserver.statuses) runs in every API process: each pass reads the events past its
cursor, works out the statuses of the builds they name, and sends the ones due. This times, on a
fresh SQLite database (or the PostgreSQL at --database-url) and against a forge API on loopback
that answers at once:
- an idle pass (nothing changed), the cost every API process pays each CISERVER_STATUS_INTERVAL;
- a burst: --builds ended builds of --jobs jobs each (a status for the pipeline and one per job,
  as on GitHub), worked out and sent;
- the delay from a committed change to the forge's receiving it, with the reporter thread at the
  default interval (1 s): woken by the commit's Redis message with --redis-url, by the interval
  alone without.
Run from the project root:

    .venv/bin/python benchmarks/statuses.py [--builds 50] [--jobs 3] [--database-url URL] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from ciserver.config import Settings
from ciserver.crypto import load_fernet
from ciserver.event_bus import install_publisher
from ciserver.states import Status
from ciserver.statuses import StatusThread, refresh_changed, send_due
from ciserver.store.db import session_scope
from ciserver.store.events import record_build, record_job
from ciserver.store.models import Build, Job, utcnow
from ciserver.store.projects import add_project, update_project
from tests.support.fake_forge import FakeForge, fake_forge


def ended_builds(settings: Settings, project_id: int, builds: int, jobs: int, offset: int = 0) -> None:
    with session_scope(settings.db_url) as session:
        for n in range(builds):
            build = Build(
                project_id=project_id, ref="refs/heads/main", branch="main", sha=f"{offset + n:040x}",
                status=Status.success, started_at=utcnow(), finished_at=utcnow(),
            )  # fmt: skip
            session.add(build)
            session.flush()
            for k in range(jobs):
                session.add(
                    Job(build_id=build.id, position=k, name=f"job{k}", stage="test", image="busybox",
                        script=[], env={}, timeout=60, after=[], status=Status.success)
                )  # fmt: skip
            session.flush()
            record_build(session, build.id)
            for job in build.jobs:
                record_job(session, job.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default=None, help="wake the reporter after each commit, as the API")
    args = parser.parse_args()

    settings = Settings(
        data_dir=Path(tempfile.mkdtemp()), database_url=args.database_url, redis_url=args.redis_url
    )
    install_publisher(args.redis_url)
    with fake_forge() as forge, httpx.Client() as client:
        with session_scope(settings.db_url) as session:
            fernet = load_fernet(settings)
            project = add_project(
                session, name="bench/app", forge="github", repo_url="https://x.test/r.git",
                secret="s" * 16, fernet=fernet,
            )  # fmt: skip
            update_project(session, project, fernet, forge_api_url=forge.url, forge_token="t")
            project_id = project.id
        refresh_changed(settings)
        send_due(settings, client)

        passes = 200
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(passes):
            refresh_changed(settings)
            send_due(settings, client)
        print(
            f"idle pass: {(time.perf_counter() - wall) / passes * 1000:.2f} ms wall, "
            f"{(time.process_time() - cpu) / passes * 1000:.2f} ms CPU"
        )

        ended_builds(settings, project_id, args.builds, args.jobs)
        wanted = args.builds * (args.jobs + 1)
        cpu, wall = time.process_time(), time.perf_counter()
        sent = 0
        while sent < wanted:
            refresh_changed(settings)
            sent += send_due(settings, client)
        took, used = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"burst: {sent} statuses of {args.builds} builds sent in {took:.2f} s "
            f"({sent / took:.0f}/s), {used / sent * 1000:.2f} ms CPU each"
        )
        woken = "woken by each commit" if args.redis_url else "the interval alone"
        print(f"change to forge ({woken}): {delays(settings, forge, project_id)}")


def delays(settings: Settings, forge: FakeForge, project_id: int, runs: int = 10) -> str:
    """Median and worst delay from a committed change to its status at the forge."""
    reporter = StatusThread(settings)
    reporter.start()
    seen: list[float] = []
    try:
        for run in range(runs):
            before = len(forge.calls)
            time.sleep(0.37 * run % 1)  # changes at different moments of the reporter's interval
            started = time.perf_counter()
            ended_builds(settings, project_id, 1, 0, offset=10_000 + run)
            forge.wait_for(lambda calls, before=before: len(calls) > before, timeout=10)
            seen.append(time.perf_counter() - started)
    finally:
        reporter.stopped.set()
    return f"median {statistics.median(seen):.2f} s, worst {max(seen):.2f} s over {runs} changes"


if __name__ == "__main__":
    main()
