"""Two reapers ending the same lost job at once on PostgreSQL (every live worker runs one): the first
gives it the retry its policy allows, and the second, waiting on the job's row, leaves that retry
alone instead of ending it `error` as lost a second time."""

from __future__ import annotations

import threading

from sqlalchemy import select

from ciserver.pipeline import JobOptions
from ciserver.pipeline.models import Retry
from ciserver.states import Status
from ciserver.store.db import session_scope
from ciserver.store.job_end import end_lost_job
from ciserver.store.models import Job
from ciserver.store.transitions import start_job
from tests.support.store import Planned, new_build

LOST = "the worker running it (gone.1) was lost"


def test_the_second_reaper_leaves_the_retry_the_first_gave(postgres_url: str) -> None:
    with session_scope(postgres_url) as session:
        retried = JobOptions(retry=Retry(max=1, when=["runner_failure"]))
        new_build(session, [Planned("slow", options=retried)])
        job_id = session.scalar(select(Job.id))
        assert start_job(session, job_id, "gone.1") is not None
    second: list[object] = []
    with session_scope(postgres_url) as first:
        assert end_lost_job(first, job_id, LOST) is not None  # retrying; not committed yet
        other = threading.Thread(target=lambda: second.append(_end_lost(postgres_url, job_id)))
        other.start()
        other.join(0.5)  # it waits on the row the first holds
    other.join(10)
    assert second == [None]
    with session_scope(postgres_url) as session:
        job = session.get_one(Job, job_id)
        assert (job.status, job.attempt, job.error) == (Status.queued, 2, None)


def _end_lost(url: str, job_id: int) -> object:
    with session_scope(url) as session:
        return end_lost_job(session, job_id, LOST)
