"""From a validated pipeline to what runs: whether a push is built at all, and its jobs in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from ciserver.pipeline.environments import DEFAULT_DEPLOY_TIMEOUT
from ciserver.pipeline.globs import MatchBudget, MatchTooCostly, matches
from ciserver.pipeline.models import Job, Pipeline, PushFilter, Rules, matrix_variants
from ciserver.units import format_duration

# Steps the glob matcher may take to plan one push (a few seconds on a 2-core worker): patterns
# and changed files both come from the pusher, and their product has no other bound.
MATCH_STEPS = 5_000_000


class PlanError(Exception):
    """A push this server will not run as its file asks (a timeout over the server's maximum, filters
    too costly to match); the build ends in error with this message."""


@dataclass(frozen=True)
class PlannedJob:
    """One job with every default applied: what the store records and a worker runs.

    `options` holds only the keys the job sets, each as `model_dump(mode="json", exclude_none=True)`
    of its model gives it, so that `Model.model_validate(options[key])` rebuilds it:

    - services: [{"image": str, "alias": str, "env": {str: str}, "command"?: [str]}]  (Service)
    - artifacts: {"paths": [str], "expire_in": seconds}  (Artifacts)
    - cache: {"key": template, "paths": [str]}  (Cache; render the key with cache_key_parts)
    - secrets: [variable names]
    - image_build: {"context": str, "dockerfile": str, "target"?: str, "build_args": {str: str}}  (ImageBuild)
    - resources: {"memory"?: bytes, "cpus"?: float, "pids"?: int}  (Resources)
    - user: str
    - network: "none"  (absent for the default network)
    - retry: {"max": int, "when": ["always" | "script_failure" | "runner_failure" | "timeout"]}  (Retry)
    - environment: str  (whose scoped secrets the job wants; the worker checks the ref may use them)
    """

    name: str  # a matrix job: "unit [PYTHON=3.10, DB=sqlite]"
    stage: str
    image: str  # "" for an image_build job that names no image; ${CI_*} references are expanded by the worker
    script: list[str]  # [] for an image_build job
    env: dict[str, str]  # the pipeline's, then the job's, then its matrix variables
    timeout: int  # seconds
    after: tuple[str, ...]  # what ends first: its needs, else every planned job of the earlier stages
    when: str = "on_success"
    allow_failure: bool = False
    options: dict[str, Any] = field(default_factory=dict)


_OPTIONS = (
    "services",
    "artifacts",
    "cache",
    "secrets",
    "image_build",
    "resources",
    "user",
    "retry",
    "environment",
)


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
    options = {key: value for key in _OPTIONS if (value := _dumped(getattr(job, key))) not in (None, [], {})}
    if job.network != "default":
        options["network"] = job.network
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
        options=options,
    )


def _dumped(value: Any) -> Any:
    """JSON-ready, as the store keeps it and the models read it back."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_dumped(item) for item in value]
    return value


def job_runs(
    job: Job,
    *,
    branch: str | None,
    tag: str | None,
    changed_files: list[str] | None,
    budget: MatchBudget | None = None,
) -> bool:
    """GitLab's only/except: every `only` list matches, and no `except` list does. Unknown changed
    files (a first or forced push) never exclude: `only.paths` counts as matched, `except.paths` not."""
    if job.only is not None and not _only_matches(job.only, branch, tag, changed_files, budget):
        return False
    return not (job.except_ is not None and _except_matches(job.except_, branch, tag, changed_files, budget))


def _only_matches(
    rules: Rules, branch: str | None, tag: str | None, changed: list[str] | None, budget: MatchBudget | None
) -> bool:
    """A push is a branch or a tag, so `branches` and `tags` together are one condition: the pushed
    ref matches the list of its kind. `paths` is the other: some changed file matches."""
    names_refs = rules.branches is not None or rules.tags is not None
    if names_refs and not (
        _ref_matches(rules.branches, branch, budget) or _ref_matches(rules.tags, tag, budget)
    ):
        return False
    if rules.paths is None or changed is None:
        return True
    return any(matches(rules.paths, path, budget) for path in changed)


def _except_matches(
    rules: Rules, branch: str | None, tag: str | None, changed: list[str] | None, budget: MatchBudget | None
) -> bool:
    if _ref_matches(rules.branches, branch, budget) or _ref_matches(rules.tags, tag, budget):
        return True
    paths = rules.paths
    return paths is not None and changed is not None and any(matches(paths, p, budget) for p in changed)


def _ref_matches(patterns: list[str] | None, ref: str | None, budget: MatchBudget | None = None) -> bool:
    return patterns is not None and ref is not None and matches(patterns, ref, budget)


class RefRules(Protocol):
    """Which refs may deploy to an environment: its file's `branches`/`tags`, or the server's rules."""

    @property
    def branches(self) -> list[str] | None: ...

    @property
    def tags(self) -> list[str] | None: ...


def accepts_release(
    rules: RefRules, *, branch: str | None, tag: str | None, default_branch: str | None
) -> bool:
    """Whether these rules take releases of this push: their `branches`/`tags` globs, or with
    neither, the repository's default branch (main when the forge did not say)."""
    if rules.branches is None and rules.tags is None:
        return branch is not None and branch == (default_branch or "main")
    return _ref_matches(rules.branches, branch) or _ref_matches(rules.tags, tag)


def accepted_refs(rules: RefRules, default_branch: str | None) -> str:
    """The refs these rules take, as a person would read them in an error."""
    if rules.branches is None and rules.tags is None:
        return f"the default branch {default_branch or 'main'!r}"
    parts = []
    if rules.branches is not None:
        parts.append(f"branches {_listed(rules.branches)}")
    if rules.tags is not None:
        parts.append(f"tags {_listed(rules.tags)}")
    return " and ".join(parts)


def push_skip_reason(
    pipeline: Pipeline, *, branch: str | None, tag: str | None, changed_files: list[str] | None
) -> str | None:
    """None when the push should be built; otherwise a human reason such as
    "branch 'dev' is not in on.push.branches [main, release/*]".

    The filters mean what they mean in GitHub Actions: naming branches but not tags leaves tag
    pushes out (and the other way round), and path filters are not applied to tags. When the changed
    files are unknown (None: a new branch, a forced push), or too costly to match, path filters
    never skip; nor do branch and tag filters too costly to match (planning then says so).
    """
    push = pipeline.on.push if pipeline.on else None
    if push is None:
        return None
    for changed in (changed_files, None):
        try:
            return _skip_reason(push, branch, tag, changed, MatchBudget(MATCH_STEPS))
        except MatchTooCostly:
            continue
    return None


def _skip_reason(
    push: PushFilter, branch: str | None, tag: str | None, changed: list[str] | None, budget: MatchBudget
) -> str | None:
    if tag is not None:
        return _ref_reason(("tag", "tags"), tag, push.tags, "branches", push.branches, budget)
    if branch is not None:
        reason = _ref_reason(("branch", "branches"), branch, push.branches, "tags", push.tags, budget)
        if reason:
            return reason
    elif push.branches is not None or push.tags is not None:
        return "the push names neither a branch nor a tag, and on.push filters by them"
    return _paths_reason(push, changed, budget)


def _ref_reason(
    kinds: tuple[str, str],
    name: str,
    patterns: list[str] | None,
    other: str,
    other_patterns: list[str] | None,
    budget: MatchBudget,
) -> str | None:
    kind, plural = kinds
    if patterns is not None:
        if matches(patterns, name, budget):
            return None
        return f"{kind} {name!r} is not in on.push.{plural} {_listed(patterns)}"
    if other_patterns is not None:
        return (
            f"{kind} {name!r} is not built: on.push names {other} {_listed(other_patterns)} and no {plural}"
        )
    return None


def _paths_reason(push: PushFilter, changed_files: list[str] | None, budget: MatchBudget) -> str | None:
    paths, ignored = push.paths, push.paths_ignore
    if changed_files is None or (paths is None and ignored is None):
        return None
    for path in changed_files:
        if (paths is None or matches(paths, path, budget)) and not (
            ignored is not None and matches(ignored, path, budget)
        ):
            return None
    if not changed_files:
        return "the push changed no files, and on.push filters by paths"
    if ignored is None:
        return f"no changed file matches on.push.paths {_listed(paths or [])}"
    if paths is None:
        return f"every changed file matches on.push.paths_ignore {_listed(ignored)}"
    outside = f"outside on.push.paths_ignore {_listed(ignored)}"
    return f"no changed file matches on.push.paths {_listed(paths)} {outside}"


def _listed(patterns: list[str]) -> str:
    return f"[{', '.join(patterns)}]"
