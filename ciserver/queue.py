"""The one place that knows RQ: queue names, job ids, and how builds and jobs are enqueued.

RQ job ids are derived from database ids (`build-7`, `job-42`), so the outbox can ask Redis
whether a build is still on the queue, and enqueueing a build twice is harmless: the worker's
conditional start lets only one run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from redis import Redis
from rq import Queue
from rq.job import Dependency, Job

BUILDS = "builds"
JOBS = "jobs"
ALL_QUEUES = (BUILDS, JOBS)

BUILD_TASK = "workers.tasks.run_build"
JOB_TASK = "workers.tasks.run_job"
# Planning a build is a fetch and a YAML parse; a slow remote is the only reason to wait long.
BUILD_TASK_TIMEOUT = 1800
# The worker stops a job's container at its own timeout; RQ's is the backstop behind it.
JOB_TIMEOUT_MARGIN = 300
RESULT_TTL = 3600


@lru_cache(maxsize=8)
def connect(url: str) -> Redis:
    """A client for the API and tools: short timeouts, so a Redis outage is an answer, not a hang."""
    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)


def build_job_id(build_id: int) -> str:
    return f"build-{build_id}"


def job_job_id(job_id: int) -> str:
    return f"job-{job_id}"


def cancel_key(job_id: int) -> str:
    return f"ciserver:cancel:{job_id}"


def enqueue_build(redis: Redis, build_id: int) -> None:
    Queue(BUILDS, connection=redis).enqueue(
        BUILD_TASK,
        build_id,
        job_id=build_job_id(build_id),
        job_timeout=BUILD_TASK_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=RESULT_TTL * 24,
    )


@dataclass(frozen=True)
class JobToEnqueue:
    job_id: int
    timeout: int
    after: tuple[int, ...]  # ids of the jobs that must end first, whatever their outcome


def enqueue_jobs(redis: Redis, jobs: Sequence[JobToEnqueue]) -> None:
    """Enqueue a build's jobs at once; RQ releases each when the jobs it waits for have ended.

    `allow_failure` lets a dependent run even when a predecessor's task crashed: the job itself
    reads its predecessors' outcome in the database and skips when it must.
    """
    queue = Queue(JOBS, connection=redis)
    datas = [
        Queue.prepare_data(
            JOB_TASK,
            args=(job.job_id,),
            job_id=job_job_id(job.job_id),
            timeout=job.timeout + JOB_TIMEOUT_MARGIN,
            result_ttl=RESULT_TTL,
            failure_ttl=RESULT_TTL * 24,
            depends_on=Dependency([job_job_id(i) for i in job.after], allow_failure=True)
            if job.after
            else None,
        )
        for job in jobs
    ]
    queue.enqueue_many(datas)


def request_cancel(redis: Redis, job_ids: Iterable[int]) -> None:
    """Tell the workers running these jobs to stop their containers (see workers.watch)."""
    with redis.pipeline() as pipe:
        for job_id in job_ids:
            pipe.lpush(cancel_key(job_id), "cancel")
            pipe.expire(cancel_key(job_id), 24 * 3600)
        pipe.execute()


def builds_not_on_queue(redis: Redis, build_ids: Sequence[int]) -> list[int]:
    """Which of these builds no RQ job is waiting for or running: lost to an outage or a failed enqueue."""
    with redis.pipeline() as pipe:
        for build_id in build_ids:
            pipe.hget(Job.key_for(build_job_id(build_id)), "status")
        found = pipe.execute()
    return [build_id for build_id, state in zip(build_ids, found, strict=True) if state not in _WAITING]


_WAITING = {b"queued", b"started", b"deferred", b"scheduled"}
