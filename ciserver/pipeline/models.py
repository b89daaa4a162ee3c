"""The pipeline file as pydantic models: every key pipelines.yml may hold, each checked on its own,
and the checks that need two keys at once (a job's stage among `stages`, an image for every job,
`needs` that name jobs and make no cycle).

Unknown keys are refused everywhere (extra="forbid"). Errors are pydantic errors with the `loc` of the
offending key, which the loader turns into a file and line. Field docstrings are the descriptions of
the JSON Schema (see pipeline.schema), so they are written for the people who edit the file. The value
types live in pipeline.fields, the environments and the deployed service in pipeline.environments.
"""

from __future__ import annotations

from itertools import product
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, model_validator

from ciserver.pipeline.environments import DeployedService, Environment, EnvironmentName, environment_problems
from ciserver.pipeline.fields import (
    ALIAS,
    ALIAS_SCHEMA,
    DEFAULT_CACHE_KEY,
    DEFAULT_EXPIRE_IN,
    EXPIRE_SCHEMA,
    MAX_MATRIX,
    MAX_NAME_LENGTH,
    MAX_RETRY,
    SIZE_SCHEMA,
    Command,
    Env,
    EnvName,
    Image,
    Loc,
    Matrix,
    Name,
    Network,
    Paths,
    Patterns,
    Problem,
    Script,
    Strict,
    Timeout,
    User,
    WorkspacePath,
    cache_key_template,
    expire_seconds,
    fail,
    keys_schema,
    positive,
    retry_schema,
    retry_shorthand,
    size_bytes,
)


class PushFilter(Strict):
    """on.push: which pushes are built. Same meaning as GitHub Actions' filters of the same names."""

    branches: Patterns | None = None
    """Build pushes to branches matching one of these globs; naming branches but not tags leaves tags out."""
    tags: Patterns | None = None
    """Build pushes of tags matching one of these globs; naming tags but not branches leaves branches out."""
    paths: Patterns | None = None
    """Build a branch push only when a changed file matches one of these globs."""
    paths_ignore: Patterns | None = None
    """Skip a branch push when every changed file matches one of these globs."""


class Triggers(Strict):
    """on: the events that start a build (only pushes for now)."""

    push: PushFilter | None = None
    """Which pushes are built; absent: every push of every branch and tag."""


class Service(Strict):
    """A sidecar container the job reaches by `alias` on a network of its own."""

    image: Image
    """The service's Docker image."""
    alias: Annotated[str, ALIAS_SCHEMA] | None = None
    """Its host name (lowercase letters, digits, '-'); default: the image's last name part, no tag."""
    env: Env = Field(default_factory=dict)
    """Variables of the service container."""
    command: Command | None = None
    """Replaces the image's command: a list of words, or a string split as a shell would."""

    @model_validator(mode="after")
    def _alias(self) -> Service:
        alias = self.alias or self.image.rsplit("/", 1)[-1].split("@")[0].split(":")[0].lower()
        if not ALIAS.fullmatch(alias):
            where: Loc = ("alias",) if self.alias else ()
            given = "" if self.alias else " (from the image name; set `alias`)"
            message = f"alias {alias!r}{given} must be a host name: lowercase letters, digits and '-'"
            raise fail("Service", [(where, message, alias)])
        object.__setattr__(self, "alias", alias)
        return self


class Artifacts(Strict):
    """Files kept after the job succeeds, given to the jobs after it."""

    paths: Paths
    """Files or directories (globs allowed) inside the workspace."""
    expire_in: Annotated[int, BeforeValidator(expire_seconds), EXPIRE_SCHEMA] = DEFAULT_EXPIRE_IN
    """How long they are kept: 7d, 12h, 90m or seconds (default 30 days). Dumped as seconds."""


class Cache(Strict):
    """Paths restored before the job and saved after it, per project and rendered key."""

    key: Annotated[str, AfterValidator(cache_key_template), Field(max_length=500)] = DEFAULT_CACHE_KEY
    """Text with optional {{ hashFiles('path or glob', ...) }}, replaced by a hash of those files."""
    paths: Paths
    """Files or directories inside the workspace."""


class ImageBuild(Strict):
    """An image built from the workspace on the worker's engine: the release artifact."""

    context: WorkspacePath = "."
    """The build context, relative to the workspace."""
    dockerfile: WorkspacePath = "Dockerfile"
    """The Dockerfile, relative to the context."""
    target: Name | None = None
    """The stage of a multi-stage Dockerfile to build."""
    build_args: Env = Field(default_factory=dict)
    """--build-arg values, as env values are written."""


class Resources(Strict):
    """Container limits, within the server's maximum."""

    memory: Annotated[int, BeforeValidator(size_bytes), SIZE_SCHEMA] | None = None
    """Memory limit: 512m, 2g or bytes (no swap). Dumped as bytes."""
    cpus: Annotated[float, Field(strict=True), AfterValidator(positive)] | None = None
    """CPUs the job may use, e.g. 1.5."""
    pids: Annotated[int, Field(strict=True), AfterValidator(positive)] | None = None
    """Most processes the job may run at once."""


class Retry(Strict):
    """Run a job again when it ends for one of these reasons."""

    max: Annotated[int, Field(strict=True, ge=0, le=MAX_RETRY)]
    """How many more times the job may run (0-5)."""
    when: list[Literal["always", "script_failure", "runner_failure", "timeout"]] = Field(
        default_factory=lambda: ["always"]
    )
    """The reasons worth a retry: script_failure, runner_failure, timeout, or always (default)."""

    def covers(self, reason: str) -> bool:
        """Whether a job that ended for this reason runs again (an empty `when` counts as always)."""
        return not self.when or "always" in self.when or reason in self.when


class Rules(Strict):
    """only/except: which pushes a job runs for (globs over the branch, the tag, the changed files)."""

    branches: Patterns | None = None
    """Globs over the pushed branch."""
    tags: Patterns | None = None
    """Globs over the pushed tag."""
    paths: Patterns | None = None
    """Globs over the changed files; unknown changes (a first or forced push) never leave the job out."""


class Job(Strict):
    """jobs.<name>: what one container runs. Unset keys fall back on the pipeline's, at planning."""

    model_config = ConfigDict(populate_by_name=True)

    stage: Name | None = None
    """One of `stages` (default: the first)."""
    image: Image | None = None
    """The job's Docker image instead of the top-level one; ${VARIABLES} are expanded."""
    script: Script | None = None
    """Lines run in order with `sh -e` in /workspace; a string is one line. Give this or image_build."""
    env: Env = Field(default_factory=dict)
    """Variables merged over the top-level env."""
    timeout: Timeout | None = None
    """How long the job may run: 90s, 10m, 1h30m or seconds (default: the server's)."""
    needs: list[Name] | None = None
    """Jobs of this or earlier stages to wait for instead of every earlier stage; [] starts at once."""
    when: Literal["on_success", "on_failure", "always", "manual"] = "on_success"
    """When the job runs: on_success (default), on_failure, always, or manual (started by hand)."""
    allow_failure: Annotated[bool, Field(strict=True)] = False
    """A failure of this job does not fail the build."""
    only: Rules | None = None
    """Run the job only when each of these lists matches the push."""
    except_: Rules | None = Field(None, alias="except")
    """Leave the job out when any of these lists matches the push."""
    matrix: Matrix | None = Field(None, json_schema_extra=keys_schema)
    """One job per combination of these values, named "job [A=1, B=x]", each with them as variables."""
    services: list[Service] = Field(default_factory=list)
    """Sidecar containers reached by their alias."""
    artifacts: Artifacts | None = None
    """Files kept after the job and given to the jobs after it."""
    cache: Cache | None = None
    """Paths restored before the job and saved after it."""
    secrets: list[EnvName] = Field(default_factory=list)
    """Server-side secrets given to the job as variables, masked in the log."""
    environment: EnvironmentName | None = None
    """The environment whose secrets the job gets (over the project's), as GitLab's `environment`:
    only for refs that environment's rules on the server allow; other refs end the job in error."""
    image_build: ImageBuild | None = None
    """Build a Docker image from the workspace instead of running a script."""
    resources: Resources | None = None
    """Container limits instead of the server's defaults."""
    user: User | None = None
    """Who the job runs as: a name or uid, optionally :group or :gid."""
    network: Network = "default"
    """none cuts the job off every network."""
    retry: Annotated[Retry, BeforeValidator(retry_shorthand)] | None = Field(
        None, json_schema_extra=retry_schema
    )
    """Run the job again when it fails: {max: 0-5, when: [...]}, or a number for {max: N}."""

    @model_validator(mode="after")
    def _consistent(self) -> Job:
        problems = _job_problems(self)
        if problems:
            raise fail("Job", problems)
        return self


class Pipeline(Strict):
    """ciserver pipelines.yml: the jobs a push runs, read from the root of the pushed commit."""

    on: Triggers | None = None
    """The events that start a build; absent: every push."""
    image: Image | None = None
    """The Docker image of every job that names none."""
    env: Env = Field(default_factory=dict)
    """Variables for every job."""
    stages: Annotated[list[Name], Field(min_length=1)] = Field(default_factory=lambda: ["test"])
    """The order jobs run in (default: [test])."""
    jobs: Annotated[dict[Name, Job], Field(min_length=1, json_schema_extra=keys_schema)]
    """At least one job, by name."""
    environments: dict[EnvironmentName, Environment] = Field(default_factory=dict)
    """Where releases of green builds are deployed: staging, production, ..."""
    service: DeployedService | None = None
    """What the environments run from the release image: its port and health check."""

    @model_validator(mode="after")
    def _consistent(self) -> Pipeline:
        problems = _stage_problems(self) + _needs_problems(self) + _matrix_problems(self.jobs)
        problems += environment_problems(self.environments, self.service, self.image)
        if problems:
            raise fail("Pipeline", problems)
        return self

    def stage_of(self, job: Job) -> str:
        """The stage a job runs in: its own, or the first one."""
        return job.stage or self.stages[0]


def matrix_variants(name: str, matrix: dict[str, list[str]] | None) -> list[tuple[str, dict[str, str]]]:
    """(name, variables) per combination, in key order then value order: "unit [PY=3.10, DB=sqlite]";
    a job without a matrix is itself alone."""
    if not matrix:
        return [(name, {})]
    keys = list(matrix)
    variants = []
    for values in product(*(matrix[key] for key in keys)):
        variables = dict(zip(keys, values, strict=True))
        label = ", ".join(f"{key}={value}" for key, value in variables.items())
        variants.append((f"{name} [{label}]", variables))
    return variants


def _job_problems(job: Job) -> list[Problem]:
    """What one job's keys say against each other, each at the key to change."""
    problems: list[Problem] = []
    if job.script is None and job.image_build is None:
        problems.append(((), "the job needs a script (or an image_build)", None))
    if job.script is not None and job.image_build is not None:
        problems.append((("image_build",), "the job has both a script and an image_build: give one", None))
    if job.services and job.network == "none":
        problems.append((("network",), "network: none leaves no way to reach its services", job.network))
    aliases = [service.alias for service in job.services]
    problems += [
        (("services", i), f"alias {aliases[i]!r} is taken by an earlier service", None)
        for i in _repeats(aliases)
    ]
    problems += [(("secrets", i), f"{job.secrets[i]!r} is named twice", None) for i in _repeats(job.secrets)]
    needs = job.needs or []
    problems += [(("needs", i), f"{needs[i]!r} is named twice", None) for i in _repeats(needs)]
    return problems + _matrix_size_problems(job.matrix or {})


def _matrix_size_problems(matrix: dict[str, list[str]]) -> list[Problem]:
    problems: list[Problem] = []
    combinations = 1
    for key, values in matrix.items():
        combinations *= len(values)
        problems += [(("matrix", key, i), f"{values[i]!r} is listed twice", None) for i in _repeats(values)]
    if combinations > MAX_MATRIX:
        problems.append((("matrix",), f"{combinations} combinations, over the limit of {MAX_MATRIX}", None))
    return problems


def _repeats(values: list[Any]) -> list[int]:
    """The indexes of values already seen earlier in the list."""
    seen: set[Any] = set()
    repeats = []
    for index, value in enumerate(values):
        if value in seen:
            repeats.append(index)
        seen.add(value)
    return repeats


def _stage_problems(pipeline: Pipeline) -> list[Problem]:
    """Stages listed twice, jobs in a stage not listed, jobs with no image at all."""
    problems: list[Problem] = [
        (("stages", i), f"stage {pipeline.stages[i]!r} is listed twice", None)
        for i in _repeats(pipeline.stages)
    ]
    for name, job in pipeline.jobs.items():
        if job.stage is not None and job.stage not in pipeline.stages:
            stages = ", ".join(pipeline.stages)
            problems.append(
                (("jobs", name, "stage"), f"{job.stage!r} is not one of stages [{stages}]", job.stage)
            )
        if job.image is None and pipeline.image is None and job.image_build is None:
            problems.append(
                (("jobs", name), f"job {name!r} has no image: give it one or set a top-level image", name)
            )
    return problems


def _needs_problems(pipeline: Pipeline) -> list[Problem]:
    """Unknown names and needs on a later stage (a job of a later stage waits for this one's
    stage, so that would never start), then cycles; each at the `needs` entry to change."""
    jobs, problems = pipeline.jobs, []
    order = {stage: index for index, stage in enumerate(pipeline.stages)}
    for name, job in jobs.items():
        for index, need in enumerate(job.needs or []):
            loc = ("jobs", name, "needs", index)
            if need not in jobs:
                problems.append((loc, f"no job is named {need!r}", need))
                continue
            stage, needed_stage = pipeline.stage_of(job), pipeline.stage_of(jobs[need])
            if order.get(needed_stage, 0) > order.get(stage, 0):
                message = (
                    f"{need!r} is in the later stage {needed_stage!r}: need jobs of stage {stage!r} or before"
                )
                problems.append((loc, message, need))
    if problems:
        return problems
    cycle = _cycle({name: job.needs or [] for name, job in jobs.items()})
    return [cycle] if cycle else []


def _cycle(needs: dict[str, list[str]]) -> Problem | None:
    """The first cycle of needs, in file order, at the entry that closes it. A depth-first walk with a
    stack of its own: a chain of thousands of jobs must not hit Python's recursion limit."""
    done: set[str] = set()
    for root in needs:
        if root in done:
            continue
        path, next_index = [root], [0]  # the walk's current path, and the need to look at next for each
        while path:
            name, index = path[-1], next_index[-1]
            if index == len(needs[name]):
                done.add(path.pop())
                next_index.pop()
                continue
            next_index[-1] += 1
            need = needs[name][index]
            if need in path:
                return ("jobs", name, "needs", index), _cycle_message(path[path.index(need) :]), need
            if need not in done:
                path.append(need)
                next_index.append(0)
    return None


def _cycle_message(loop: list[str]) -> str:
    """'a' needs itself; a cycle: a -> b -> a; a long one shortened in the middle."""
    if len(loop) == 1:
        return f"{loop[0]!r} needs itself"
    names = [*loop, loop[0]]
    if len(loop) <= 8:
        return "a cycle: " + " -> ".join(names)
    return f"a cycle of {len(loop)} jobs: " + " -> ".join([*names[:4], "...", *names[-4:]])


def _matrix_problems(jobs: dict[str, Job]) -> list[Problem]:
    """A matrix job's variant names must still be valid names, and not be another job's."""
    taken = set(jobs)
    problems: list[Problem] = []
    for name, job in jobs.items():
        if not job.matrix:
            continue
        for variant, _ in matrix_variants(name, job.matrix):
            problem = _variant_problem(variant, taken)
            if problem:
                problems.append((("jobs", name, "matrix"), problem, None))
                break
            taken.add(variant)
    return problems


def _variant_problem(variant: str, taken: set[str]) -> str | None:
    if len(variant) > MAX_NAME_LENGTH:
        return (
            f"the variant name {variant!r} is over {MAX_NAME_LENGTH} characters: shorten the name or values"
        )
    if not variant.isprintable():
        return f"the variant name {variant!r} has a tab, newline or other unprintable character"
    if variant in taken:
        return f"the variant name {variant!r} is already taken by another job"
    return None
