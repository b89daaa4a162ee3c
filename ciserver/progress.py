"""`ciserver up`'s progress lines: one per build created, started and ended, per job end and per
deployment step, each with the status and the API address to read more.

Read from the events table (ciserver.event_feed), woken by the same Redis message as the API's
streams, in a thread of the supervisor; it imports neither FastAPI nor the app, so the supervisor
stays small. Everything in a line that a pusher wrote (branch, job name, error) is shown with its
control characters escaped, so a branch name cannot drive the operator's terminal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ciserver.event_bus import CHANNEL
from ciserver.event_feed import EventCursor, new_cursor, read_new, reader_engine
from ciserver.store.models import Job

log = logging.getLogger(__name__)

FINAL = {"success", "failed", "error", "canceled", "skipped"}
POLL = 1.0
MAX_TEXT = 120


def shown(value: object, limit: int = MAX_TEXT) -> str:
    """Text from a push as a terminal may print it: control characters escaped, long text cut."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _seconds(start: str | None, end: str | None) -> str | None:
    if not start or not end:
        return None
    return f"{(datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds():.1f}s"


def build_line(data: dict[str, Any], base_url: str, jobs: int | None = None) -> str:
    """`build 12 acme/app main 1a2b3c4: success (3 jobs, 4.2s) URL`."""
    where = data.get("branch") or (f"tag {data['tag']}" if data.get("tag") else data.get("ref") or "")
    status = data["status"]
    details = []
    if status in FINAL:
        if jobs is not None:
            details.append(f"{jobs} job" + ("" if jobs == 1 else "s"))
        took = _seconds(data.get("started_at"), data.get("finished_at"))
        if took:
            details.append(took)
    said = f" ({', '.join(details)})" if details else ""
    why = f": {shown(data['error'])}" if data.get("error") and status != "success" else ""
    return (
        f"build {data['id']} {shown(data['project'])} {shown(where)} {str(data.get('sha') or '')[:7]}: "
        f"{status}{said}{why} {base_url}/api/v1/builds/{data['id']}"
    )


def job_line(data: dict[str, Any], base_url: str) -> str:
    """`job 34 acme/app build 12 unit: failed (exit 1, 2.1s) URL`."""
    details = []
    if data.get("exit_code") is not None:
        details.append(f"exit {data['exit_code']}")
    took = _seconds(data.get("started_at"), data.get("finished_at"))
    if took:
        details.append(took)
    said = f" ({', '.join(details)})" if details else ""
    why = f": {shown(data['error'])}" if data.get("error") else ""
    return (
        f"job {data['id']} {shown(data['project'])} build {data['build_id']} {shown(data['name'])}: "
        f"{data['status']}{said}{why} {base_url}/api/v1/jobs/{data['id']}/log"
    )


def deployment_line(data: dict[str, Any], base_url: str) -> str:
    """`deployment 5 acme/app staging build 12 canary: progressing, weight 25, step 1 URL`."""
    why = f": {shown(data['reason'])}" if data.get("reason") else ""
    return (
        f"deployment {data['id']} {shown(data['project'])} {shown(data['environment'])} "
        f"build {data['build_id']} {shown(data['strategy'])}: {data['status']}, weight {data['weight']}, "
        f"step {data['step']}{why} {base_url}/api/v1/deployments/{data['id']}"
    )


def line_of(data: dict[str, Any], base_url: str, count_jobs: Callable[[int], int | None]) -> str | None:
    """The line an event makes, or None for those `up` does not print (a job queued or started)."""
    kind = data.get("kind")
    if kind == "build":
        jobs = count_jobs(data["id"]) if data["status"] in FINAL else None
        return build_line(data, base_url, jobs)
    if kind == "job":
        return job_line(data, base_url) if data["status"] in FINAL else None
    if kind == "deployment":
        return deployment_line(data, base_url)
    return None


def _print(line: str) -> None:
    print(line, flush=True)


class ProgressPrinter(threading.Thread):
    """Prints the progress lines of whatever happens from its start on, until stopped."""

    def __init__(
        self, db_url: str, redis_url: str, base_url: str, write: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(name="ciserver-progress", daemon=True)
        self.db_url, self.redis_url, self.base_url = db_url, redis_url, base_url
        self.write = write or _print
        self.stopped = threading.Event()
        self.cursor: EventCursor | None = None

    def start_here(self) -> None:
        """Take the newest event as the start (the API made the tables by now, or there is none)."""
        try:
            self.cursor = new_cursor(self.db_url, None)
        except SQLAlchemyError:
            self.cursor = EventCursor(0)  # a new database: every event is new

    def run(self) -> None:
        if self.cursor is None:
            self.start_here()
        pubsub = None
        while not self.stopped.is_set():
            try:
                if pubsub is None:
                    pubsub = Redis.from_url(self.redis_url, socket_connect_timeout=2).pubsub()
                    pubsub.subscribe(CHANNEL)
                self._print_new()
                pubsub.get_message(timeout=POLL)
                while pubsub.get_message(timeout=0):  # several commits: one read
                    pass
            except RedisError:
                pubsub = None
                self.stopped.wait(POLL)
            except SQLAlchemyError as exc:  # the API has not made the tables yet, or the database is busy
                log.debug("progress: will read again: %s", exc)
                self.stopped.wait(POLL)
        try:
            self._print_new()  # what the last jobs' ends wrote while it was told to stop
        except SQLAlchemyError:
            pass

    def _print_new(self) -> None:
        assert self.cursor is not None
        for data in read_new(self.db_url, self.cursor):
            line = line_of(data, self.base_url, self._count_jobs)
            if line is not None:
                self.write(line)

    def _count_jobs(self, build_id: int) -> int:
        with Session(reader_engine(self.db_url)) as session:
            return session.scalar(select(func.count()).select_from(Job).where(Job.build_id == build_id)) or 0
