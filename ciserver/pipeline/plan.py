"""From a validated pipeline to what runs: a push's jobs in order, every default applied (which jobs
and pushes the rules let through, ciserver.pipeline.rules decides)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ciserver.pipeline.environments import DEFAULT_DEPLOY_TIMEOUT
from ciserver.pipeline.globs import MatchBudget, MatchTooCostly
from ciserver.pipeline.models import Job, Pipeline, matrix_variants
from ciserver.pipeline.options import JobOptions
from ciserver.pipeline.rules import MATCH_STEPS, job_runs
from ciserver.units import format_duration


class PlanError(Exception):
    """A push this server will not run as its file asks (a timeout over the server's maximum, filters
    too costly to match); the build ends in error with this message."""


@dataclass(frozen=True)
class PlannedJob:
    """One job with every default applied: what the store records and a worker runs."""

    name: str  # a matrix job: "unit [PYTHON=3.10, DB=sqlite]"
    stage: str
    image: str  # "" for an image_build job that names no image; ${CI_*} references are expanded by the worker
    script: list[str]  # [] for an image_build job
    env: dict[str, str]  # the pipeline's, then the job's, then its matrix variables
    timeout: int  # seconds
    after: tuple[str, ...]  # what ends first: its needs, else every planned job of the earlier stages
    when: str = "on_success"
    allow_failure: bool = False
    options: JobOptions = field(default_factory=JobOptions)


def plan_jobs(
    pipeline: Pipeline,
    *,
    branch: str | None = None,
    tag: str | None = None,
    changed_files: list[str] | None = None,
    default_timeout: int = 3600,
    max_timeout: int | None = None,
) -> list[PlannedJob]:
    """The jobs this push runs, in stage order, then file order, matrix variants in order.

    Jobs whose only/except rules leave them out are not planned, and `needs` on them are dropped
    (a job whose every need was left out starts at once, as with `needs: []`). Changed files too
    costly to match against the path rules count as unknown, as a list the forge cut short does.
    Raises PlanError for a timeout over `max_timeout` (the server's maximum).
    """
    if max_timeout is not None:
        _check_timeouts(pipeline, max_timeout)
        default_timeout = min(default_timeout, max_timeout)
    try:
        kept = _kept_jobs(pipeline, branch, tag, changed_files)
    except MatchTooCostly:
        try:
            kept = _kept_jobs(pipeline, branch, tag, None)
        except MatchTooCostly as exc:
            raise PlanError(
                f"only/except: the branch and tag patterns are too costly to match ({exc})"
            ) from None
    variants = {name: matrix_variants(name, job.matrix) for name, job in kept.items()}
    by_stage: dict[str, list[str]] = {stage: [] for stage in pipeline.stages}
    for name, job in kept.items():
        by_stage[pipeline.stage_of(job)].append(name)
    planned: list[PlannedJob] = []
    earlier: list[str] = []
    for stage, names in by_stage.items():
        for name in names:
            job = kept[name]
            after = tuple(earlier) if job.needs is None else _needed(job.needs, variants)
            for variant, matrix in variants[name]:
                planned.append(_planned(pipeline, job, variant, stage, after, matrix, default_timeout))
        earlier += [variant for name in names for variant, _ in variants[name]]
    return planned


def _kept_jobs(
    pipeline: Pipeline, branch: str | None, tag: str | None, changed_files: list[str] | None
) -> dict[str, Job]:
    budget = MatchBudget(MATCH_STEPS)
    return {
        name: job
        for name, job in pipeline.jobs.items()
        if job_runs(job, branch=branch, tag=tag, changed_files=changed_files, budget=budget)
    }


def _check_timeouts(pipeline: Pipeline, max_timeout: int) -> None:
    """Jobs and deploy scripts may not ask to hold a worker longer than the server allows."""
    asked = [(f"jobs.{name}", job.timeout) for name, job in pipeline.jobs.items()]
    asked += [
        (f"environments.{name}", environment.timeout or DEFAULT_DEPLOY_TIMEOUT)
        for name, environment in pipeline.environments.items()
        if environment.script is not None
    ]
    for where, timeout in asked:
        if timeout is not None and timeout > max_timeout:
            raise PlanError(
                f"{where}.timeout: {format_duration(timeout)} is over this server's maximum of "
                f"{format_duration(max_timeout)} (CISERVER_JOB_TIMEOUT_MAX)"
            )


def _needed(needs: list[str], variants: dict[str, list[tuple[str, dict[str, str]]]]) -> tuple[str, ...]:
    """The planned names behind `needs`: a matrix job's every variant, nothing for a job left out."""
    return tuple(variant for need in needs for variant, _ in variants.get(need, []))


def _planned(
    pipeline: Pipeline,
    job: Job,
    name: str,
    stage: str,
    after: tuple[str, ...],
    matrix: dict[str, str],
    default_timeout: int,
) -> PlannedJob:
    # An image build runs no container of its own: the top-level image is not its image.
    default_image = None if job.image_build is not None else pipeline.image
    return PlannedJob(
        name=name,
        stage=stage,
        image=job.image or default_image or "",
        script=list(job.script or []),
        env={**pipeline.env, **job.env, **matrix},
        timeout=job.timeout or default_timeout,
        after=after,
        when=job.when,
        allow_failure=job.allow_failure,
        options=JobOptions.of(job),
    )
