"""One attempt of one job: workspace at the sha, artifacts of the jobs before it, cache, secrets,
then the container (or the image build), then artifacts and cache kept, workspace removed.

Built from the job's row inside the caller's transaction; `execute` then runs with no session
open, and the caller writes the outcome (see workers.tasks.run_job).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time

from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from ciserver import queue
from ciserver.clone_urls import Remote
from ciserver.config import Settings
from ciserver.crypto import SecretKeyError, load_fernet
from ciserver.job_variables import job_variables
from ciserver.logs import LogStoreError, LogWriter
from ciserver.masking import mask_text
from ciserver.pipeline import JobOptions, OptionsError
from ciserver.pipeline.fields import DEFAULT_CACHE_KEY, DEFAULT_EXPIRE_IN
from ciserver.states import Status, StopReason
from ciserver.store.artifacts import artifacts_for_job
from ciserver.store.clone_credentials import clone_remote
from ciserver.store.environments import job_refusal
from ciserver.store.job_end import AttemptEnd
from ciserver.store.models import Job
from ciserver.store.secrets import SecretError, secret_values
from ciserver.units import format_duration
from workers import artifacts, cache
from workers.checkout import CheckoutError, checkout_at_sha, ensure_commit
from workers.context import WorkerContext
from workers.executors.base import BuildFailed, BuiltImage, ExecutorError, ImageBuildSpec, JobSpec
from workers.jobspec import SpecError, numeric_owner, spec_for

log = logging.getLogger(__name__)

HANDED_BACK = "its worker was told to stop and the grace period ran out: handed back to the queue"


class JobRun:
    """Everything one attempt needs, read from the database up front; problems found then (options
    this version cannot read, a missing secret, limits over the maximum) end the attempt in `error`
    when it executes."""

    def __init__(self, ctx: WorkerContext, session: Session, job: Job) -> None:
        build = job.build
        self.ctx, self.settings = ctx, ctx.settings
        self.job_id, self.timeout = job.id, job.timeout
        self.sha, self.project_id = build.sha, build.project.id
        self.remote = Remote(build.project.repo_url)
        self.ref, self.default_branch = build.ref, build.default_branch
        self.mirror = self.settings.mirrors_dir / f"{self.project_id}.git"
        self.workspace = self.settings.workspaces_dir / str(build.id) / str(job.id)
        self.problem: str | None = None
        self.env = job_variables(job)  # as the API expands the job's image to show it
        self.secrets: list[str] = []
        # Read back from the row here, so that one this version cannot read ends the job in error.
        self.options = JobOptions()
        self.spec: JobSpec | ImageBuildSpec | None = None  # None: a problem ends the attempt
        labels = {
            "ciserver.job": str(job.id),
            "ciserver.build": str(build.id),
            "ciserver.project": build.project.name,
            "ciserver.worker": ctx.worker_name,
            "ciserver.data_dir": str(self.settings.data_dir),
        }
        try:
            self.options = JobOptions.from_stored(job.options)
            self.remote = clone_remote(build.project.repo_url, build.project.repo_credentials, self.settings)
            secrets = _secrets(session, job, self.options, self.settings)
            self.env |= secrets
            self.secrets = list(secrets.values())
            self.spec = spec_for(job, self.options, self.env, secrets, self.workspace, labels, self.settings)
        except (OptionsError, SecretError, SecretKeyError, SpecError) as exc:
            self.problem = str(exc)
        self.inputs = [(a.path, a.storage_key) for a in artifacts_for_job(session, job)]
        self.writer = LogWriter(
            ctx.log_store,
            ctx.redis,
            job.id,
            self.settings.log_stream_ttl,
            secrets=self.secrets,
            max_bytes=self.settings.log_max_bytes,
            spill_dir=self.settings.logs_dir,
        )
        self.kept: list[artifacts.StoredFile] = []
        self.expire_in = self.options.artifacts.expire_in if self.options.artifacts else DEFAULT_EXPIRE_IN
        self.image: BuiltImage | None = None

    def execute(self) -> AttemptEnd:
        """Run the attempt; never raises for the job's own failures, only reports them (masked),
        with what it made."""
        end = self._execute()
        return dataclasses.replace(
            end,
            error=mask_text(end.error, self.secrets) if end.error else end.error,
            kept=self.kept,
            expire_in=self.expire_in,
            image=self.image,
        )

    def _execute(self) -> AttemptEnd:
        watch = StopWatch(self.ctx, self.job_id, self.timeout)
        end = AttemptEnd(Status.error, error="the worker stopped before the job ended")
        try:
            spec = self.spec
            if self.problem or spec is None:
                return AttemptEnd(Status.error, error=self.problem)
            ensure_commit(self.mirror, self.remote, self.sha, allow_local=self.settings.allow_local_repos)
            checkout_at_sha(self.mirror, self.sha, self.workspace)
            self._place_inputs()
            archive = self._restore_cache()
            self._hand_workspace_to_the_job_user()
            watch.start()
            end = self._run(spec, watch)
            if end.status == Status.success:
                self._keep_artifacts()
                if archive is not None:
                    self._save_cache(archive)
        except (CheckoutError, ExecutorError, SpecError) as exc:
            end = watch.stopped() or AttemptEnd(Status.error, error=str(exc))
        except (artifacts.ArtifactError, BuildFailed) as exc:
            end = AttemptEnd(Status.failed, error=str(exc))
        except LogStoreError as exc:
            end = AttemptEnd(Status.error, error=str(exc))
        except Exception as exc:
            log.exception("job %s: internal error", self.job_id)
            end = AttemptEnd(Status.error, error=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            watch.finish()
            shutil.rmtree(self.workspace, ignore_errors=True)
        return end

    def close(self, status: Status, error: str | None) -> None:
        """The last line and the end of the live stream (`retrying` keeps readers waiting)."""
        if error:
            self.writer.line(f"ciserver: {error}")
        self.writer.close(status)

    def note(self, text: str) -> None:
        """A line of ours in the job's log; a failing log store is reported by the job's output."""
        with contextlib.suppress(LogStoreError):
            self.writer.line(f"ciserver: {text}")

    def hand_back(self, text: str) -> None:
        """This attempt is over but the job is not (a retry follows): the stream stays open."""
        self.note(text)
        with contextlib.suppress(LogStoreError):
            self.writer.flush()

    def _run(self, spec: JobSpec | ImageBuildSpec, watch: StopWatch) -> AttemptEnd:
        executor = self.ctx.executor
        if isinstance(spec, ImageBuildSpec):
            image = executor.build_image(spec, self.writer.write, watch.stop)
            self.image = image
            self.note(f"image {image.tag} built: id {image.image_id}, digest {image.digest}")
            return AttemptEnd(Status.success, exit_code=0)
        return watch.end(executor.run(spec, self.writer.write, watch.stop).exit_code)

    def _hand_workspace_to_the_job_user(self) -> None:
        """A job running as `user: "1000:1000"` must be able to write its workspace."""
        owner = numeric_owner(self.spec.user if isinstance(self.spec, JobSpec) else None)
        if owner is None or os.geteuid() != 0:
            return
        for path in [self.workspace, *self.workspace.rglob("*")]:
            os.chown(path, *owner, follow_symlinks=False)

    def _place_inputs(self) -> None:
        if self.inputs:
            count = artifacts.place(self.inputs, self.workspace, self.ctx.artifact_store)
            self.note(f"artifacts: placed {count} file(s) from the jobs before this one")

    def _restore_cache(self) -> str | None:
        """The archive this job saves to: its own ref's. It restores that, or else (read only) the
        default branch's; one that cannot be restored is reported and the job runs without it."""
        asked = self.options.cache
        if asked is None:
            return None
        try:
            key = cache.render_key(asked.key or DEFAULT_CACHE_KEY, self.workspace)
        except cache.CacheError as exc:
            self.note(f"{exc}; the job runs without the cache")
            return None
        places = cache.archives(self.project_id, key, self.ref, self.default_branch)
        for archive, whose in places:
            try:
                hit = cache.restore(self.ctx.cache_store, archive, self.workspace)
            except cache.CacheError as exc:
                self.note(f"{exc} (key {key!r}{whose}); the job runs without it")
                break
            if hit:
                self.note(f"cache: restored key {key!r}{whose}")
                break
        else:
            self.note(f"cache: no cache yet for key {key!r}")
        return places[0][0]

    def _save_cache(self, archive: str) -> None:
        asked = self.options.cache
        if asked is None:
            return
        try:
            store, limit = self.ctx.cache_store, self.settings.cache_max_bytes
            size = cache.save(store, archive, self.workspace, asked.paths, limit)
            self.note(f"cache: saved ({size:,} bytes)")
        except cache.CacheError as exc:
            self.note(str(exc))

    def _keep_artifacts(self) -> None:
        asked = self.options.artifacts
        if asked is None:
            return
        self.kept = artifacts.collect(
            self.workspace,
            asked.paths,
            self.ctx.artifact_store,
            self.job_id,
            max_bytes=self.settings.artifact_max_bytes,
            warn=self.note,
        )
        total = sum(f.size for f in self.kept)
        self.note(f"artifacts: kept {len(self.kept)} file(s), {total:,} bytes")


def _secrets(session: Session, job: Job, options: JobOptions, settings: Settings) -> dict[str, str]:
    """The secrets the job names: with `environment:`, that environment's values over the project's,
    only for a ref the environment's rules on the server allow (SecretError naming them otherwise)."""
    wanted, environment = options.secrets, options.environment
    if environment is not None:
        refused = job_refusal(session, job.build, environment)
        if refused:
            field = f"secrets: {', '.join(wanted)}" if wanted else "environment"
            raise SecretError(f"{field}: {refused}")
    if not wanted:
        return {}
    return secret_values(session, job.build.project_id, wanted, load_fernet(settings), environment)


class StopWatch:
    """Stops a job when its timeout passes or someone cancels it, and says which happened."""

    def __init__(self, ctx: WorkerContext, job_id: int, timeout: int) -> None:
        self.redis, self.key, self.timeout = ctx.redis, queue.cancel_key(job_id), timeout
        self.hand_back = ctx.hand_back
        self.stop = threading.Event()
        self.reason: StopReason | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                self._request(StopReason.timeout)
                return
            if self.hand_back.is_set():
                self._request(StopReason.handed_back)
                return
            try:
                # A short block, so a finished job's watcher ends soon without anyone waking it.
                if self.redis.blpop([self.key], timeout=min(left, 1.0)):
                    self._request(StopReason.canceled)
                    return
            except RedisError:
                time.sleep(min(left, 1.0))  # cancel is unavailable while Redis is; the timeout still holds

    def _request(self, reason: StopReason) -> None:
        if not self._done.is_set():
            self.reason = reason
            self.stop.set()

    def finish(self) -> None:
        self._done.set()

    def end(self, exit_code: int) -> AttemptEnd:
        """The attempt's end once the job's container exited with `exit_code`."""
        if stopped := self.stopped(exit_code):
            return stopped
        if exit_code == 0:
            return AttemptEnd(Status.success, exit_code=exit_code)
        return AttemptEnd(Status.failed, exit_code=exit_code, error=f"exit code {exit_code}")

    def stopped(self, exit_code: int | None = None) -> AttemptEnd | None:
        """The attempt's end when this stopped it (hand back, cancel or timeout), whatever the engine
        said; None when it did not."""
        if self.reason is None:
            return None
        status, error = {
            StopReason.handed_back: (Status.queued, HANDED_BACK),
            StopReason.canceled: (Status.canceled, "canceled"),
            StopReason.timeout: (Status.failed, f"timed out after {format_duration(self.timeout)}"),
        }[self.reason]
        return AttemptEnd(status, exit_code=exit_code, error=error, stopped_by=self.reason)
