"""RQ entry points. run_build plans a push into jobs; run_job runs one of them (see job_run).

Every outcome is written to the database before the task returns, and no exception of ours
leaves a build or job `running`: what cannot be run ends as `error` with the reason.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sqlalchemy import select

from ciserver import queue
from ciserver.crypto import SecretKeyError
from ciserver.pipeline import Pipeline, PipelineError, PlanError, load_pipeline, plan_jobs, push_skip_reason
from ciserver.states import Status
from ciserver.store.builds import auto_cancel_older
from ciserver.store.clone_credentials import clone_remote
from ciserver.store.db import session_scope
from ciserver.store.dispatch import Dispatched, advance
from ciserver.store.job_end import AttemptEnd, JobEnded, Verdict, end_attempt
from ciserver.store.models import Build, Job
from ciserver.store.transitions import add_jobs, end_build, end_job, start_build, start_job
from workers.checkout import CheckoutError, ensure_commit, read_file_at
from workers.context import WorkerContext, current
from workers.job_run import JobRun

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
        superseded = auto_cancel_older(session, build)
    if superseded:
        _tell_running_to_stop(ctx, superseded)
    try:
        pipeline = _load(ctx, push)
    except _BuildEnded as ended:
        with session_scope(db) as session:
            end_build(session, build_id, ended.status, ended.reason)
        return
    try:
        plan = plan_jobs(
            pipeline,
            branch=push.branch,
            tag=push.tag,
            changed_files=push.changed_files,
            default_timeout=ctx.settings.job_timeout,
            max_timeout=ctx.settings.job_timeout_max,
        )
    except PlanError as exc:
        with session_scope(db) as session:
            end_build(session, build_id, Status.error, f"{PIPELINE_FILE}: {exc}")
        return
    with session_scope(db) as session:
        if not plan:
            end_build(session, build_id, Status.skipped, "no job's only/except rules match this push")
            return
        add_jobs(session, push.id, plan)
        build = session.get(Build, push.id)
        if build is not None and pipeline.environments:
            build.deploy = pipeline.model_dump(
                mode="json", include={"environments", "service", "image"}, exclude_none=True
            )
        dispatched = advance(session, push.id, ctx.settings.project_concurrency)
    _enqueue(ctx, dispatched)


def _enqueue(ctx: WorkerContext, dispatched: list[Dispatched]) -> None:
    try:
        queue.enqueue_jobs(ctx.redis, dispatched)
    except RedisError as exc:
        # Recorded as dispatched: the outbox enqueues them once Redis answers.
        log.warning("jobs %s: not enqueued, left to the outbox: %s", [d.job_id for d in dispatched], exc)


def _tell_running_to_stop(ctx: WorkerContext, job_ids: list[int]) -> None:
    try:
        queue.request_cancel(ctx.redis, job_ids)
    except RedisError as exc:
        log.warning("jobs %s: could not be told to stop: %s", job_ids, exc)


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
        self.repo_credentials = build.project.repo_credentials


def _load(ctx: WorkerContext, push: _BuildFacts) -> Pipeline:
    mirror = ctx.settings.mirrors_dir / f"{push.project_id}.git"
    try:
        remote = clone_remote(push.repo_url, push.repo_credentials, ctx.settings)
        ensure_commit(mirror, remote, push.sha, allow_local=ctx.settings.allow_local_repos)
        text = read_file_at(mirror, push.sha, PIPELINE_FILE)
    except (CheckoutError, SecretKeyError) as exc:
        raise _BuildEnded(Status.error, str(exc)) from None
    if text is None:
        raise _BuildEnded(Status.error, f"{PIPELINE_FILE}: not found at the root of commit {push.sha[:12]}")
    try:
        pipeline = load_pipeline(text, PIPELINE_FILE)
    except PipelineError as exc:
        raise _BuildEnded(Status.error, str(exc)) from None
    reason = push_skip_reason(pipeline, branch=push.branch, tag=push.tag, changed_files=push.changed_files)
    if reason:
        raise _BuildEnded(Status.skipped, reason)
    return pipeline


def run_job(job_id: int) -> None:
    ctx = current()
    try:
        _run_job(ctx, job_id)
    except BaseException as exc:
        log.exception("job %s: failed to run", job_id)
        internal = AttemptEnd(Status.error, error=_internal_error(exc))
        with session_scope(ctx.settings.db_url) as session:
            ended = end_attempt(
                session, job_id, internal, concurrency=ctx.settings.project_concurrency, may_retry=False
            )
        if ended is not None and not isinstance(exc, SystemExit | KeyboardInterrupt):
            _hand_out(ctx, ended)
        raise


def _run_job(ctx: WorkerContext, job_id: int) -> None:
    db = ctx.settings.db_url
    with session_scope(db) as session:
        started = start_job(session, job_id, ctx.worker_name)
        if started is None:
            return  # canceled, skipped, or already taken by another worker
        run = JobRun(ctx, session, started)
    end = run.execute()
    with session_scope(db) as session:
        ended = end_attempt(session, job_id, end, concurrency=ctx.settings.project_concurrency)
        assert ended is not None
        log.info("job %s: attempt %s ended %s (%s)", job_id, ended.attempt, end.status, ended.verdict)
        # Written before the end is committed: whoever sees the job final finds its last line there.
        if ended.verdict == Verdict.handed_back:
            run.hand_back(f"attempt {ended.attempt}: {end.error}")
        elif ended.verdict == Verdict.retrying:
            retrying = "retrying, as its retry policy says"
            run.hand_back(f"attempt {ended.attempt} ended {end.status} ({end.error}); {retrying}")
        else:
            run.close(end.status, end.error)
    _hand_out(ctx, ended)


def _hand_out(ctx: WorkerContext, ended: JobEnded) -> None:
    """The jobs whose turn came and the deployments the job's end started, to the queue."""
    _enqueue(ctx, ended.dispatched)
    if ended.deployments:
        try:
            queue.enqueue_deployments(ctx.redis, ended.deployments)
        except RedisError as exc:
            log.warning("deployments %s: not enqueued, left to the outbox: %s", ended.deployments, exc)
