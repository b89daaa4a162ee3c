"""RQ entry points. run_build plans a push into jobs; run_job runs one of them in a container.

Every outcome is written to the database before the task returns, and no exception of ours
leaves a build or job `running`: what cannot be run ends as `error` with the reason.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session

from ciserver import queue
from ciserver.logs import LogWriter
from ciserver.pipeline import PipelineError, load_pipeline, plan_jobs, push_skip_reason
from ciserver.store.db import session_scope
from ciserver.store.models import Build, Job, Status
from ciserver.store.transitions import (
    add_jobs,
    end_build,
    end_job,
    settle_build,
    start_build,
    start_job,
    statuses_of,
)
from workers.checkout import CheckoutError, checkout_at_sha, ensure_commit, read_file_at
from workers.context import WorkerContext, current
from workers.executors.base import ExecutorError, JobSpec

log = logging.getLogger(__name__)

PIPELINE_FILE = "pipelines.yml"


def run_build(build_id: int) -> None:
    ctx = current()
    try:
        _run_build(ctx, build_id)
    except BaseException as exc:
        # Whatever went wrong (a bug, the worker told to stop), the build must not stay `running`.
        log.exception("build %s: planning failed", build_id)
        with session_scope(ctx.settings.db_url) as session:
            if end_build(session, build_id, Status.error, _internal_error(exc)):
                for job in session.scalars(select(Job.id).where(Job.build_id == build_id)):
                    end_job(session, job, Status.error, error="its build ended in error while planning")
        raise


def _internal_error(exc: BaseException) -> str:
    if isinstance(exc, SystemExit | KeyboardInterrupt):
        return "the worker stopped before this ended"
    return f"internal error: {type(exc).__name__}: {exc}"


def _run_build(ctx: WorkerContext, build_id: int) -> None:
    db = ctx.settings.db_url
    with session_scope(db) as session:
        build = start_build(session, build_id)
        if build is None:
            return  # canceled, or already taken by another worker
        push = _BuildFacts(build)
    try:
        jobs = _plan(ctx, push)
    except _BuildEnded as ended:
        with session_scope(db) as session:
            end_build(session, build_id, ended.status, ended.reason)
        return
    try:
        queue.enqueue_jobs(ctx.redis, jobs)
    except RedisError as exc:
        with session_scope(db) as session:
            for job in jobs:
                end_job(session, job.job_id, Status.error, error=f"could not be queued: {exc}")
            settle_build(session, build_id)


class _BuildEnded(Exception):
    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class _BuildFacts:
    """The columns planning needs, read once so no session stays open during git work."""

    def __init__(self, build: Build) -> None:
        self.id, self.sha = build.id, build.sha
        self.branch, self.tag = build.branch, build.tag
        self.changed_files = build.changed_files
        self.project_id, self.repo_url = build.project.id, build.project.repo_url


def _plan(ctx: WorkerContext, push: _BuildFacts) -> list[queue.JobToEnqueue]:
    mirror = ctx.settings.mirrors_dir / f"{push.project_id}.git"
    try:
        ensure_commit(mirror, push.repo_url, push.sha, allow_local=ctx.settings.allow_local_repos)
    except CheckoutError as exc:
        raise _BuildEnded(Status.error, str(exc)) from None
    text = read_file_at(mirror, push.sha, PIPELINE_FILE)
    if text is None:
        raise _BuildEnded(Status.error, f"{PIPELINE_FILE}: not found at the root of commit {push.sha[:12]}")
    try:
        pipeline = load_pipeline(text, PIPELINE_FILE)
    except PipelineError as exc:
        raise _BuildEnded(Status.error, str(exc)) from None
    reason = push_skip_reason(pipeline, branch=push.branch, tag=push.tag, changed_files=push.changed_files)
    if reason:
        raise _BuildEnded(Status.skipped, reason)
    plan = plan_jobs(pipeline, default_timeout=ctx.settings.job_timeout)
    with session_scope(ctx.settings.db_url) as session:
        rows = add_jobs(session, push.id, plan)
        ids = {row.name: row.id for row in rows}
    return [queue.JobToEnqueue(ids[p.name], p.timeout, tuple(ids[name] for name in p.after)) for p in plan]


def run_job(job_id: int) -> None:
    ctx = current()
    try:
        _run_job(ctx, job_id)
    except BaseException as exc:
        log.exception("job %s: failed to run", job_id)
        with session_scope(ctx.settings.db_url) as session:
            job = session.get(Job, job_id)
            if job is not None and end_job(session, job_id, Status.error, error=_internal_error(exc)):
                settle_build(session, job.build_id)
        raise


def _run_job(ctx: WorkerContext, job_id: int) -> None:
    db = ctx.settings.db_url
    with session_scope(db) as session:
        job = session.get(Job, job_id)
        if job is None or job.status != Status.queued:
            return
        blocker = _failed_predecessor(session, job)
        if blocker:
            end_job(session, job_id, Status.skipped, error=blocker)
            settle_build(session, job.build_id)
            return
        started = start_job(session, job_id, ctx.worker_name)
        if started is None:
            settle_build(session, job.build_id)
            return
        spec, timeout, mirror, facts = _job_spec(ctx, started)
    status, exit_code, error = _execute(ctx, spec, timeout, mirror, facts)
    with session_scope(db) as session:
        end_job(session, job_id, status, exit_code=exit_code, error=error)
        settle_build(session, facts.id)


def _failed_predecessor(session: Session, job: Job) -> str | None:
    statuses = statuses_of(session, job.build_id, job.after)
    for name in job.after:
        if statuses.get(name) != Status.success:
            return f"skipped: {name!r} ended {statuses.get(name, 'missing')}"
    return None


def _job_spec(ctx: WorkerContext, job: Job) -> tuple[JobSpec, int, Path, _BuildFacts]:
    build = job.build
    facts = _BuildFacts(build)
    env = {str(k): str(v) for k, v in job.env.items()}
    env.update(
        CI="true",
        CI_COMMIT_SHA=build.sha,
        CI_COMMIT_REF=build.ref,
        CI_COMMIT_BRANCH=build.branch or "",
        CI_COMMIT_TAG=build.tag or "",
        CI_BUILD_ID=str(build.id),
        CI_JOB_ID=str(job.id),
        CI_JOB_NAME=job.name,
        CI_JOB_STAGE=job.stage,
        CI_PROJECT=build.project.name,
    )
    spec = JobSpec(
        job_id=job.id,
        name=job.name,
        image=job.image,
        script=tuple(job.script),
        env=env,
        workspace=ctx.settings.workspaces_dir / str(build.id) / str(job.id),
        labels={
            "ciserver.job": str(job.id),
            "ciserver.build": str(build.id),
            "ciserver.project": build.project.name,
            "ciserver.worker": ctx.worker_name,
            "ciserver.data_dir": str(ctx.settings.data_dir),
        },
    )
    return spec, job.timeout, ctx.settings.mirrors_dir / f"{facts.project_id}.git", facts


def _execute(
    ctx: WorkerContext, spec: JobSpec, timeout: int, mirror: Path, facts: _BuildFacts
) -> tuple[Status, int | None, str | None]:
    writer = LogWriter(ctx.log_store, ctx.redis, spec.job_id, ctx.settings.log_stream_ttl)
    watch = StopWatch(ctx, spec.job_id, timeout)
    status, exit_code, error = Status.error, None, "the worker stopped before the job ended"
    try:
        ensure_commit(mirror, facts.repo_url, facts.sha, allow_local=ctx.settings.allow_local_repos)
        checkout_at_sha(mirror, facts.sha, spec.workspace)
        watch.start()
        exit_code = ctx.executor.run(spec, writer.write, watch.stop)
        status, error = watch.outcome(exit_code)
    except (CheckoutError, ExecutorError) as exc:
        status, error = Status.error, str(exc)
    except Exception as exc:
        log.exception("job %s: internal error", spec.job_id)
        status, error = Status.error, f"internal error: {exc}"
    finally:
        watch.finish()
        if error:
            writer.line(f"ciserver: {error}")
        writer.close(status.value)
        shutil.rmtree(spec.workspace, ignore_errors=True)
    return status, exit_code, error


class StopWatch:
    """Stops a job when its timeout passes or someone cancels it, and says which happened."""

    def __init__(self, ctx: WorkerContext, job_id: int, timeout: int) -> None:
        self.redis, self.key, self.timeout = ctx.redis, queue.cancel_key(job_id), timeout
        self.stop = threading.Event()
        self.reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                self._request("timeout")
                return
            try:
                # A short block, so a finished job's watcher ends soon without anyone waking it.
                if self.redis.blpop([self.key], timeout=min(left, 1.0)):
                    self._request("canceled")
                    return
            except RedisError:
                time.sleep(min(left, 1.0))  # cancel is unavailable while Redis is; the timeout still holds

    def _request(self, reason: str) -> None:
        if not self._done.is_set():
            self.reason = reason
            self.stop.set()

    def finish(self) -> None:
        self._done.set()

    def outcome(self, exit_code: int) -> tuple[Status, str | None]:
        if self.reason == "canceled":
            return Status.canceled, "canceled"
        if self.reason == "timeout":
            return Status.failed, f"timed out after {format_duration(self.timeout)}"
        if exit_code == 0:
            return Status.success, None
        return Status.failed, f"exit code {exit_code}"


def format_duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"
