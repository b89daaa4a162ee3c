"""The pipeline file as pydantic models: every key pipelines.yml may hold, each checked on its own,
and the checks that need two keys at once (a job's stage among `stages`, an image for every job,
`needs` that name jobs and make no cycle).

Unknown keys are refused everywhere (extra="forbid"). Errors are pydantic errors with the `loc` of the
offending key, which the loader turns into a file and line. Field docstrings are the descriptions of
the JSON Schema (see pipeline.schema), so they are written for the people who edit the file.
"""

from __future__ import annotations

import re
import shlex
from itertools import product
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError, ValidationError

from ciserver.pipeline.cache_key import cache_key_parts, workspace_path_problem
from ciserver.units import parse_duration, parse_size

MAX_NAME_LENGTH = 100
MAX_TIMEOUT = 30 * 24 * 3600  # a month: past that a number is a typo, and it must fit in a database column
MAX_MATRIX = 100  # combinations of one job's matrix
MAX_RETRY = 5
MAX_EXPIRE_IN = 10 * 365 * 24 * 3600
DEFAULT_EXPIRE_IN = 30 * 24 * 3600

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str, Any]  # where, what, the value found there

_DURATION = re.compile(r"(?:([0-9]{1,9})h)?(?:([0-9]{1,9})m)?(?:([0-9]{1,9})s)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ALIAS = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _invalid(kind: str, message: str) -> PydanticCustomError:
    # No context is given, so pydantic leaves braces in the message (user text) alone.
    return PydanticCustomError(kind, message)


def _fail(title: str, problems: list[Problem]) -> ValidationError:
    """Several problems at once, each at its own loc (relative to the model being validated)."""
    return ValidationError.from_exception_data(
        title,
        [
            {"type": _invalid("pipeline", message), "loc": loc, "input": value}
            for loc, message, value in problems
        ],
    )


def _one_or_many(value: Any) -> Any:
    """A single string stands for a list of one, as people write `script: make test`."""
    return [value] if isinstance(value, str) else value


def _name(value: str) -> str:
    """Job and stage names show up in the dashboard, logs and container labels."""
    if not value:
        raise _invalid("name", "a name must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise _invalid("name", f"a name must be at most {MAX_NAME_LENGTH} characters")
    if not value.isprintable():
        raise _invalid("name", f"{value!r} contains a tab, newline or other unprintable character")
    return value


def _image(value: str) -> str:
    """An image name becomes a Docker argument: nothing that could read as an option or split."""
    if not value or value.startswith("-") or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise _invalid(
            "image", f"invalid image {value!r}: not empty, no leading '-', no spaces or control characters"
        )
    return value


def _no_nul(value: str) -> str:
    """NUL cannot cross into a process's arguments or environment."""
    if "\0" in value:
        raise _invalid("nul", "must not contain a NUL character")
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise _invalid(
            "env_name", f"invalid variable name {value!r} (letters, digits and _, not starting with a digit)"
        )
    return value


def _env_value(value: Any) -> Any:
    """Environment values are strings; numbers and booleans are written the way YAML reads them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise _invalid("env_value", 'expected a string, number or boolean (write "" for an empty value)')


def _seconds(value: Any) -> int:
    """A timeout: "90s", "10m", "1h30m", "2h", or an int of seconds (also quoted)."""
    if isinstance(value, str) and re.fullmatch("[0-9]{1,9}", value):
        value = int(value)
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if match:
        hours, minutes, seconds = (int(group or 0) for group in match.groups())
        value = hours * 3600 + minutes * 60 + seconds
    elif not isinstance(value, int) or isinstance(value, bool):
        raise _invalid("duration", f"invalid duration {value!r} (use 90s, 10m, 1h30m or seconds)")
    if not 0 < value <= MAX_TIMEOUT:
        raise _invalid("duration", f"a timeout must be more than 0s and at most 30 days, not {value}s")
    return value


def _patterns(values: list[str]) -> list[str]:
    """Filter patterns, GitHub style: a leading '!' excludes, so a list needs one that includes."""
    if any(pattern in ("", "!") for pattern in values):
        raise _invalid("pattern", "a pattern must not be empty")
    if values and all(pattern.startswith("!") for pattern in values):
        raise _invalid("pattern", "needs at least one pattern without '!' (a '!' only excludes)")
    return values


def _workspace_path(value: str) -> str:
    """A path a job names inside its workspace: relative, no `..`, so it cannot lead out."""
    if problem := workspace_path_problem(value):
        raise _invalid("path", problem)
    return value


def _cache_key(value: str) -> str:
    """Literal text and `{{ hashFiles('path', ...) }}`, nothing else between braces."""
    try:
        cache_key_parts(value)
    except ValueError as exc:
        raise _invalid("cache_key", str(exc)) from None
    return value


def _command(value: Any) -> Any:
    """A service's command as a string is split into words as a shell (and Docker Compose) would."""
    if not isinstance(value, str):
        return value
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise _invalid("command", f"cannot split {value!r} into words: {exc}") from None


def _positive(value: float) -> float:
    if value <= 0:
        raise _invalid("positive", f"must be more than 0, not {value}")
    return value


def _user(value: str) -> str:
    """A Docker --user value: passed as one argument, so nothing that splits or reads as an option."""
    parts = value.split(":")
    if (
        len(parts) > 2
        or not all(parts)
        or value.startswith("-")
        or len(value) > 256
        or any(ch.isspace() or not ch.isprintable() for ch in value)
    ):
        message = (
            f"invalid user {value!r} (a name or uid, optionally :group or :gid; no spaces, no '-' first)"
        )
        raise _invalid("user", message)
    return value


def _size(value: Any) -> int:
    try:
        size = parse_size(value)
    except (ValueError, AttributeError) as exc:
        raise _invalid("size", str(exc)) from None
    if size <= 0:
        raise _invalid("size", "must be more than 0")
    return size


def _expire(value: Any) -> int:
    try:
        seconds = parse_duration(value)
    except (ValueError, AttributeError) as exc:
        raise _invalid("duration", str(exc)) from None
    if not 0 < seconds <= MAX_EXPIRE_IN:
        raise _invalid("duration", "must be more than 0s and at most 10 years")
    return seconds


def _retry(value: Any) -> Any:
    """`retry: 2` is short for {max: 2, when: [always]}."""
    return {"max": value} if isinstance(value, int) and not isinstance(value, bool) else value


# What the JSON Schema says where a validator accepts more than the field's Python type, or where a
# pattern lets an editor flag what the validator refuses.
_NO_CONTROL = r"\x00-\x1f\x7f"
_SCALAR = WithJsonSchema({"type": ["string", "number", "boolean"]})
_NAME_SCHEMA = WithJsonSchema(
    {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": f"^[^{_NO_CONTROL}]+$"}
)
_IMAGE_SCHEMA = WithJsonSchema({"type": "string", "pattern": rf"^[^-\s{_NO_CONTROL}][^\s{_NO_CONTROL}]*$"})
_ENV_NAME_SCHEMA = WithJsonSchema({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"})
_ENV_SCHEMA = WithJsonSchema(
    {
        "type": "object",
        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    }
)
_TIMEOUT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": "^([0-9]+|(?=[0-9])([0-9]+h)?([0-9]+m)?([0-9]+s)?)$"},
            {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT},
        ]
    }
)
_EXPIRE_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": "^([0-9]+|(?=[0-9])([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?)$"},
            {"type": "integer", "minimum": 1, "maximum": MAX_EXPIRE_IN},
        ]
    }
)
_SIZE_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": r"^\s*[0-9]+\s*[kmgtKMGT]?([iI]?[bB])?\s*$"},
            {"type": "integer", "minimum": 1},
        ]
    }
)
_STRINGS = WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
# Relative, not empty, no NUL, no `..` component (with / or \ as separators).
_PATH = {"type": "string", "pattern": r"^(?![/\\])(?!(.*[/\\])?\.\.([/\\]|$))[^\x00]+$"}
_PATHS_SCHEMA = WithJsonSchema({"anyOf": [_PATH, {"type": "array", "items": _PATH, "minItems": 1}]})
_ALIAS_SCHEMA = WithJsonSchema({"type": "string", "pattern": f"^{_ALIAS.pattern}$"})
_USER_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "maxLength": 256,
        "pattern": rf"^[^-:\s{_NO_CONTROL}][^:\s{_NO_CONTROL}]*(:[^:\s{_NO_CONTROL}]+)?$",
    }
)


def _retry_schema(schema: dict[str, Any]) -> None:
    """`retry: 2`: the validator takes a bare number too, which the Retry model's schema does not say."""
    shorthand = {"type": "integer", "minimum": 0, "maximum": MAX_RETRY, "description": "Short for {max: N}."}
    schema["anyOf"].insert(0, shorthand)


def _keys_schema(schema: dict[str, Any]) -> None:
    """pydantic states a key pattern as patternProperties, which lets keys that do not match through
    unchecked; say it as propertyNames, with the value schema for every key."""
    for part in [schema, *schema.get("anyOf", [])]:
        for pattern, value in part.pop("patternProperties", {}).items():
            part.setdefault("propertyNames", {})["pattern"] = pattern
            part["additionalProperties"] = value


Name = Annotated[str, AfterValidator(_name), _NAME_SCHEMA]
Image = Annotated[str, AfterValidator(_image), _IMAGE_SCHEMA]
EnvName = Annotated[str, AfterValidator(_env_name), _ENV_NAME_SCHEMA]
EnvValue = Annotated[str, BeforeValidator(_env_value), AfterValidator(_no_nul), _SCALAR]
Env = Annotated[dict[EnvName, EnvValue], _ENV_SCHEMA]
Script = Annotated[
    list[Annotated[str, AfterValidator(_no_nul)]],
    BeforeValidator(_one_or_many),
    Field(min_length=1),
    _STRINGS,
]
Timeout = Annotated[int, BeforeValidator(_seconds), _TIMEOUT_SCHEMA]
Patterns = Annotated[list[str], BeforeValidator(_one_or_many), AfterValidator(_patterns), _STRINGS]
WorkspacePath = Annotated[str, AfterValidator(_workspace_path), WithJsonSchema(_PATH)]
Paths = Annotated[list[WorkspacePath], BeforeValidator(_one_or_many), Field(min_length=1), _PATHS_SCHEMA]
Command = Annotated[
    list[Annotated[str, AfterValidator(_no_nul)]], BeforeValidator(_command), Field(min_length=1), _STRINGS
]
MatrixValue = Annotated[str, BeforeValidator(_env_value), AfterValidator(_no_nul), _SCALAR]
Matrix = Annotated[dict[EnvName, Annotated[list[MatrixValue], Field(min_length=1)]], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class PushFilter(_Strict):
    """on.push: which pushes are built. Same meaning as GitHub Actions' filters of the same names."""

    branches: Patterns | None = None
    """Build pushes to branches matching one of these globs; naming branches but not tags leaves tags out."""
    tags: Patterns | None = None
    """Build pushes of tags matching one of these globs; naming tags but not branches leaves branches out."""
    paths: Patterns | None = None
    """Build a branch push only when a changed file matches one of these globs."""
    paths_ignore: Patterns | None = None
    """Skip a branch push when every changed file matches one of these globs."""


class Triggers(_Strict):
    """on: the events that start a build (only pushes for now)."""

    push: PushFilter | None = None
    """Which pushes are built; absent: every push of every branch and tag."""


class Service(_Strict):
    """A sidecar container the job reaches by `alias` on a network of its own."""

    image: Image
    """The service's Docker image."""
    alias: Annotated[str, _ALIAS_SCHEMA] | None = None
    """Its host name (lowercase letters, digits, '-'); default: the image's last name part, no tag."""
    env: Env = Field(default_factory=dict)
    """Variables of the service container."""
    command: Command | None = None
    """Replaces the image's command: a list of words, or a string split as a shell would."""

    @model_validator(mode="after")
    def _alias(self) -> Service:
        alias = self.alias or self.image.rsplit("/", 1)[-1].split("@")[0].split(":")[0].lower()
        if not _ALIAS.fullmatch(alias):
            where: Loc = ("alias",) if self.alias else ()
            given = "" if self.alias else " (from the image name; set `alias`)"
            message = f"alias {alias!r}{given} must be a host name: lowercase letters, digits and '-'"
            raise _fail("Service", [(where, message, alias)])
        object.__setattr__(self, "alias", alias)
        return self


class Artifacts(_Strict):
    """Files kept after the job succeeds, given to the jobs after it."""

    paths: Paths
    """Files or directories (globs allowed) inside the workspace."""
    expire_in: Annotated[int, BeforeValidator(_expire), _EXPIRE_SCHEMA] = DEFAULT_EXPIRE_IN
    """How long they are kept: 7d, 12h, 90m or seconds (default 30 days). Dumped as seconds."""


class Cache(_Strict):
    """Paths restored before the job and saved after it, per project and rendered key."""

    key: Annotated[str, AfterValidator(_cache_key), Field(max_length=500)] = "default"
    """Text with optional {{ hashFiles('path or glob', ...) }}, replaced by a hash of those files."""
    paths: Paths
    """Files or directories inside the workspace."""


class ImageBuild(_Strict):
    """An image built from the workspace on the worker's engine: the release artifact."""

    context: WorkspacePath = "."
    """The build context, relative to the workspace."""
    dockerfile: WorkspacePath = "Dockerfile"
    """The Dockerfile, relative to the context."""
    target: Name | None = None
    """The stage of a multi-stage Dockerfile to build."""
    build_args: Env = Field(default_factory=dict)
    """--build-arg values, as env values are written."""


class Resources(_Strict):
    """Container limits, within the server's maximum."""

    memory: Annotated[int, BeforeValidator(_size), _SIZE_SCHEMA] | None = None
    """Memory limit: 512m, 2g or bytes (no swap). Dumped as bytes."""
    cpus: Annotated[float, Field(strict=True), AfterValidator(_positive)] | None = None
    """CPUs the job may use, e.g. 1.5."""
    pids: Annotated[int, Field(strict=True), AfterValidator(_positive)] | None = None
    """Most processes the job may run at once."""


class Retry(_Strict):
    """Run a job again when it ends for one of these reasons."""

    max: Annotated[int, Field(strict=True, ge=0, le=MAX_RETRY)]
    """How many more times the job may run (0-5)."""
    when: list[Literal["always", "script_failure", "runner_failure", "timeout"]] = Field(
        default_factory=lambda: ["always"]
    )
    """The reasons worth a retry: script_failure, runner_failure, timeout, or always (default)."""


class Rules(_Strict):
    """only/except: which pushes a job runs for (globs over the branch, the tag, the changed files)."""

    branches: Patterns | None = None
    """Globs over the pushed branch."""
    tags: Patterns | None = None
    """Globs over the pushed tag."""
    paths: Patterns | None = None
    """Globs over the changed files; unknown changes (a first or forced push) never leave the job out."""


class Job(_Strict):
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
    matrix: Matrix | None = Field(None, json_schema_extra=_keys_schema)
    """One job per combination of these values, named "job [A=1, B=x]", each with them as variables."""
    services: list[Service] = Field(default_factory=list)
    """Sidecar containers reached by their alias."""
    artifacts: Artifacts | None = None
    """Files kept after the job and given to the jobs after it."""
    cache: Cache | None = None
    """Paths restored before the job and saved after it."""
    secrets: list[EnvName] = Field(default_factory=list)
    """Server-side secrets given to the job as variables, masked in the log."""
    image_build: ImageBuild | None = None
    """Build a Docker image from the workspace instead of running a script."""
    resources: Resources | None = None
    """Container limits instead of the server's defaults."""
    user: Annotated[str, AfterValidator(_user), _USER_SCHEMA] | None = None
    """Who the job runs as: a name or uid, optionally :group or :gid."""
    network: Literal["default", "none"] = "default"
    """none cuts the job off every network."""
    retry: Annotated[Retry, BeforeValidator(_retry)] | None = Field(None, json_schema_extra=_retry_schema)
    """Run the job again when it fails: {max: 0-5, when: [...]}, or a number for {max: N}."""

    @model_validator(mode="after")
    def _consistent(self) -> Job:
        problems = _job_problems(self)
        if problems:
            raise _fail("Job", problems)
        return self


class Pipeline(_Strict):
    """ciserver pipelines.yml: the jobs a push runs, read from the root of the pushed commit."""

    on: Triggers | None = None
    """The events that start a build; absent: every push."""
    image: Image | None = None
    """The Docker image of every job that names none."""
    env: Env = Field(default_factory=dict)
    """Variables for every job."""
    stages: Annotated[list[Name], Field(min_length=1)] = Field(default_factory=lambda: ["test"])
    """The order jobs run in (default: [test])."""
    jobs: Annotated[dict[Name, Job], Field(min_length=1, json_schema_extra=_keys_schema)]
    """At least one job, by name."""

    @model_validator(mode="after")
    def _consistent(self) -> Pipeline:
        problems = _stage_problems(self) + _needs_problems(self) + _matrix_problems(self.jobs)
        if problems:
            raise _fail("Pipeline", problems)
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
