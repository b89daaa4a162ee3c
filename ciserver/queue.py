"""The one place that knows RQ: queue names, job ids, how builds and jobs are enqueued, and what
waits on the queues (for /metrics).

RQ job ids are derived from database ids (`build-7`, `job-42`), so the outbox can ask Redis
whether a build is still on the queue, and enqueueing a build twice is harmless: the worker's
conditional start lets only one run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol, TypeVar

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.utils import utcparse
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from ciserver.deploy.names import deploy_name

BUILDS = "builds"
JOBS = "jobs"
DEPLOYS = "deploys"
ALL_QUEUES = (BUILDS, JOBS, DEPLOYS)

BUILD_TASK = "workers.tasks.run_build"
JOB_TASK = "workers.tasks.run_job"
DEPLOY_TASK = "workers.deploy.run_deployment"
RETIRE_TASK = "workers.deploy.retire"
# A canary of 20 steps of 30 minutes fits; the deployment's own steps decide when it ends.
DEPLOY_TASK_TIMEOUT = 12 * 3600
# Planning a build is a fetch and a YAML parse; a slow remote is the only reason to wait long.
BUILD_TASK_TIMEOUT = 1800
# The worker stops a job's container at its own timeout; RQ's is the backstop behind it.
JOB_TIMEOUT_MARGIN = 300
RESULT_TTL = 3600

_T = TypeVar("_T")


@lru_cache(maxsize=8)
def connect(url: str) -> Redis:
    """A client for the API and tools: short timeouts, so a Redis outage is an answer, not a hang."""
    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)


def build_job_id(build_id: int) -> str:
    return f"build-{build_id}"


def job_job_id(job_id: int, attempt: int = 1) -> str:
    # A retry is a new RQ job: the finished attempt keeps its own record.
    return f"job-{job_id}" if attempt == 1 else f"job-{job_id}-{attempt}"


def deploy_job_id(deployment_id: int) -> str:
    return f"deploy-{deployment_id}"


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


class JobToEnqueue(Protocol):
    """A job the dispatcher handed out (ciserver.store.dispatch.Dispatched has these)."""

    job_id: int
    attempt: int
    timeout: int


def enqueue_jobs(redis: Redis, jobs: Sequence[JobToEnqueue]) -> None:
    """Enqueue jobs whose turn has come; the order between them is decided by the dispatcher."""
    if not jobs:
        return
    datas = [
        Queue.prepare_data(
            JOB_TASK,
            args=(job.job_id,),
            job_id=job_job_id(job.job_id, job.attempt),
            timeout=job.timeout + JOB_TIMEOUT_MARGIN,
            result_ttl=RESULT_TTL,
            failure_ttl=RESULT_TTL * 24,
        )
        for job in jobs
    ]
    Queue(JOBS, connection=redis).enqueue_many(datas)


def enqueue_deployments(redis: Redis, deployment_ids: Sequence[int]) -> None:
    """Hand deployments to the deploy workers; one not yet its turn is dropped by the worker and
    enqueued again when the deployment before it ends."""
    if not deployment_ids:
        return
    datas = [
        Queue.prepare_data(
            DEPLOY_TASK,
            args=(deployment_id,),
            job_id=deploy_job_id(deployment_id),
            timeout=DEPLOY_TASK_TIMEOUT,
            result_ttl=RESULT_TTL,
            failure_ttl=RESULT_TTL * 24,
        )
        for deployment_id in deployment_ids
    ]
    Queue(DEPLOYS, connection=redis).enqueue_many(datas)


def enqueue_retire(redis: Redis, project: str, environment: str, color: str, after: int) -> None:
    """Remove the environment's previous color `after` seconds from now (RQ's scheduler, run by the
    workers), unless it serves again by then."""
    Queue(DEPLOYS, connection=redis).enqueue_in(
        timedelta(seconds=after),
        RETIRE_TASK,
        project,
        environment,
        color,
        job_id=f"retire-{deploy_name(project, environment)}-{color}",
        result_ttl=RESULT_TTL,
    )


def request_cancel(redis: Redis, job_ids: Iterable[int]) -> None:
    """Tell the workers running these jobs to stop their containers (see workers.watch)."""
    with redis.pipeline() as pipe:
        for job_id in job_ids:
            pipe.lpush(cancel_key(job_id), "cancel")
            pipe.expire(cancel_key(job_id), 24 * 3600)
        pipe.execute()


def builds_not_on_queue(redis: Redis, build_ids: Sequence[int]) -> list[int]:
    """Which of these builds no RQ job is waiting for or running: lost to an outage or a failed enqueue."""
    return _not_on_queue(redis, build_ids, [build_job_id(build_id) for build_id in build_ids])


def jobs_not_on_queue(redis: Redis, jobs: Sequence[JobToEnqueue]) -> list[JobToEnqueue]:
    """Which of these dispatched jobs no RQ job is waiting for or running."""
    return _not_on_queue(redis, jobs, [job_job_id(job.job_id, job.attempt) for job in jobs])


def deployments_not_on_queue(redis: Redis, deployment_ids: Sequence[int]) -> list[int]:
    """Which of these deployments no RQ job is waiting for or running."""
    return _not_on_queue(redis, deployment_ids, [deploy_job_id(d) for d in deployment_ids])


def _not_on_queue(redis: Redis, items: Sequence[_T], rq_ids: list[str]) -> list[_T]:
    with redis.pipeline() as pipe:
        for rq_id in rq_ids:
            pipe.hget(Job.key_for(rq_id), "status")
        found = pipe.execute()
    return [item for item, state in zip(items, found, strict=True) if state not in _WAITING]


_WAITING = {b"queued", b"started", b"deferred", b"scheduled"}


@dataclass(frozen=True)
class QueueFacts:
    """A queue as /metrics reports it."""

    name: str
    waiting: int
    oldest_wait: float  # seconds the oldest waiting task has waited; 0 when none waits
    workers: int  # workers alive that take from it


def queue_facts(redis: Redis, names: Sequence[str], now: datetime | None = None) -> list[QueueFacts]:
    """Each queue's waiting tasks, the oldest one's wait, and the workers alive; two round trips.

    RQ appends to a queue's list and takes from its head, so the head is the oldest. A worker killed
    outright stays in RQ's set until a cleanup; its own key expires with its heartbeat (worker_ttl),
    so only members whose key exists count."""
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(Queue.redis_queue_namespace_prefix + name)
            pipe.lindex(Queue.redis_queue_namespace_prefix + name, 0)
            pipe.smembers(WORKERS_BY_QUEUE_KEY % name)
        first = pipe.execute()
    depth: dict[str, int] = {}
    heads: dict[str, bytes | None] = {}
    members: dict[str, list[bytes]] = {}
    for index, name in enumerate(names):
        depth[name], heads[name], found = first[3 * index : 3 * index + 3]
        members[name] = sorted(found)
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            if heads[name] is not None:
                pipe.hget(Job.key_for(heads[name].decode()), "enqueued_at")
            for key in members[name]:
                pipe.exists(key)
        second = iter(pipe.execute())
    now = now or datetime.now(UTC)
    facts = []
    for name in names:
        enqueued = next(second) if heads[name] is not None else None
        alive = sum(1 for _ in members[name] if next(second))
        facts.append(QueueFacts(name, depth[name], _age(enqueued, now), alive))
    return facts


def _age(enqueued_at: bytes | None, now: datetime) -> float:
    if not enqueued_at:
        return 0.0
    try:
        then = utcparse(enqueued_at.decode())
    except ValueError:
        return 0.0
    return max(0.0, (now - then).total_seconds())
