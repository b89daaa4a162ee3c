"""The pipeline file as pydantic models: every key pipelines.yml may hold, each checked on its own,
and the checks that need two keys at once (a job's stage among `stages`, an image for every job).

Unknown keys are refused everywhere (extra="forbid"). Errors are pydantic errors with the `loc` of the
offending key, which the loader turns into a file and line."""

from __future__ import annotations

import re
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

from ciserver.units import parse_duration, parse_size

MAX_NAME_LENGTH = 100
MAX_TIMEOUT = 30 * 24 * 3600  # a month: past that a number is a typo, and it must fit in a database column

_DURATION = re.compile(r"(?:([0-9]{1,9})h)?(?:([0-9]{1,9})m)?(?:([0-9]{1,9})s)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _invalid(kind: str, message: str) -> PydanticCustomError:
    # No context is given, so pydantic leaves braces in the message (user text) alone.
    return PydanticCustomError(kind, message)


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


# What the JSON Schema says where a validator accepts more than the field's Python type.
_SCALAR = WithJsonSchema({"type": ["string", "number", "boolean"]})
_DURATION_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"},
            {"type": "integer"},
        ]
    }
)
_SIZE_SCHEMA = WithJsonSchema(
    {"anyOf": [{"type": "string", "pattern": "^[0-9]+ *[kmgtKMGT]?(i?[bB])?$"}, {"type": "integer"}]}
)
_STRINGS = WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})

Name = Annotated[str, AfterValidator(_name)]
Image = Annotated[str, AfterValidator(_image)]
Env = dict[
    Annotated[str, AfterValidator(_env_name)],
    Annotated[str, BeforeValidator(_env_value), AfterValidator(_no_nul), _SCALAR],
]
Script = Annotated[
    list[Annotated[str, AfterValidator(_no_nul)]],
    BeforeValidator(_one_or_many),
    Field(min_length=1),
    _STRINGS,
]
Timeout = Annotated[int, BeforeValidator(_seconds), _DURATION_SCHEMA]
Patterns = Annotated[list[str], BeforeValidator(_one_or_many), AfterValidator(_patterns), _STRINGS]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PushFilter(_Strict):
    """on.push: which pushes are built. Same meaning as GitHub Actions' filters of the same names."""

    branches: Patterns | None = None
    tags: Patterns | None = None
    paths: Patterns | None = None
    paths_ignore: Patterns | None = None


class Triggers(_Strict):
    """on: the events that start a build (only pushes for now)."""

    push: PushFilter | None = None


MAX_MATRIX = 100
_ALIAS = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?")
_HASH_FILES = re.compile(r"\{\{\s*hashFiles\(([^)]*)\)\s*\}\}")
_QUOTED = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)")\s*(?:,|$)""")


def _workspace_path(value: str) -> str:
    """A path a job names inside its workspace: relative, no `..`, so it cannot lead out."""
    parts = value.replace("\\", "/").split("/")
    if not value or value.startswith("/") or ".." in parts or "\0" in value:
        raise _invalid(
            "path",
            f"{value!r} must be a relative path that stays inside the workspace (no '..', no '/' first)",
        )
    return value


def _cache_key(value: str) -> str:
    """Literal text and `{{ hashFiles('path', ...) }}`, nothing else between braces."""
    rest = _HASH_FILES.sub("", value)
    if "{{" in rest or "}}" in rest:
        raise _invalid("cache_key", "between {{ }} only hashFiles('path', ...) is understood")
    for match in _HASH_FILES.finditer(value):
        arguments = match.group(1)
        paths = [a or b for a, b in _QUOTED.findall(arguments)]
        if not paths or _QUOTED.sub("", arguments).strip():
            raise _invalid("cache_key", "hashFiles takes quoted paths: hashFiles('requirements.txt')")
        for path in paths:
            _workspace_path(path)
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise _invalid("positive", f"must be more than 0, not {value}")
    return value


def _user(value: str) -> str:
    if not _USER.fullmatch(value):
        raise _invalid("user", f"invalid user {value!r} (a name or uid, optionally :group or :gid)")
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
    if not 0 < seconds <= 10 * 365 * 24 * 3600:
        raise _invalid("duration", "must be more than 0s and at most 10 years")
    return seconds


def _retry(value: Any) -> Any:
    """`retry: 2` is short for {max: 2, when: [always]}."""
    return {"max": value} if isinstance(value, int) and not isinstance(value, bool) else value


WorkspacePath = Annotated[str, AfterValidator(_workspace_path)]
Paths = Annotated[list[WorkspacePath], BeforeValidator(_one_or_many), Field(min_length=1), _STRINGS]
Command = Annotated[list[Annotated[str, AfterValidator(_no_nul)]], BeforeValidator(_one_or_many), _STRINGS]
EnvName = Annotated[str, AfterValidator(_env_name)]


class Service(_Strict):
    """A sidecar container the job reaches by `alias` on a network of its own."""

    image: Image
    alias: str | None = None
    env: Env = Field(default_factory=dict)
    command: Command | None = None

    @model_validator(mode="after")
    def _alias(self) -> Service:
        alias = self.alias or self.image.rsplit("/", 1)[-1].split("@")[0].split(":")[0].lower()
        if not _ALIAS.fullmatch(alias):
            raise _invalid("alias", f"alias {alias!r} must be a host name: lowercase letters, digits and '-'")
        object.__setattr__(self, "alias", alias)
        return self


class Artifacts(_Strict):
    """Files kept after the job succeeds, given to the jobs after it."""

    paths: Paths
    expire_in: Annotated[int, BeforeValidator(_expire), _DURATION_SCHEMA] = 30 * 24 * 3600


class Cache(_Strict):
    """Paths restored before the job and saved after it, per project and rendered key."""

    key: Annotated[str, AfterValidator(_cache_key), Field(max_length=500)] = "default"
    paths: Paths


class ImageBuild(_Strict):
    """An image built from the workspace on the worker's engine: the release artifact."""

    context: WorkspacePath = "."
    dockerfile: WorkspacePath = "Dockerfile"
    target: Annotated[str, AfterValidator(_name)] | None = None
    build_args: Env = Field(default_factory=dict)


class Resources(_Strict):
    """Container limits, within the server's maximum."""

    memory: Annotated[int, BeforeValidator(_size), _SIZE_SCHEMA] | None = None
    cpus: Annotated[float, AfterValidator(_positive)] | None = None
    pids: Annotated[int, Field(gt=0)] | None = None


class Retry(_Strict):
    """Run a job again when it ends for one of these reasons."""

    max: Annotated[int, Field(ge=0, le=5)]
    when: list[Literal["always", "script_failure", "runner_failure", "timeout"]] = Field(
        default_factory=lambda: ["always"]
    )


class Rules(_Strict):
    """only/except: which pushes a job runs for (globs over the branch, the tag, the changed files)."""

    branches: Patterns | None = None
    tags: Patterns | None = None
    paths: Patterns | None = None


MatrixValue = Annotated[str, BeforeValidator(_env_value), AfterValidator(_no_nul), _SCALAR]


class Job(_Strict):
    """jobs.<name>: what one container runs. Unset keys fall back on the pipeline's, at planning."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    stage: Name | None = None
    image: Image | None = None
    script: Script | None = None
    env: Env = Field(default_factory=dict)
    timeout: Timeout | None = None
    needs: list[Name] | None = None
    when: Literal["on_success", "on_failure", "always", "manual"] = "on_success"
    allow_failure: bool = False
    only: Rules | None = None
    except_: Rules | None = Field(None, alias="except")
    matrix: dict[EnvName, Annotated[list[MatrixValue], Field(min_length=1)]] | None = None
    services: list[Service] = Field(default_factory=list)
    artifacts: Artifacts | None = None
    cache: Cache | None = None
    secrets: list[EnvName] = Field(default_factory=list)
    image_build: ImageBuild | None = None
    resources: Resources | None = None
    user: Annotated[str, AfterValidator(_user)] | None = None
    network: Literal["default", "none"] = "default"
    retry: Annotated[Retry, BeforeValidator(_retry)] | None = None  # schema: see pipeline.schema

    @model_validator(mode="after")
    def _consistent(self) -> Job:
        if self.script is None and self.image_build is None:
            raise _invalid("script", "the job needs a script (or an image_build)")
        if self.script is not None and self.image_build is not None:
            raise _invalid("script", "the job has both a script and an image_build: give one")
        if self.services and self.network == "none":
            raise _invalid("network", "network: none leaves no way to reach its services")
        aliases = [service.alias for service in self.services]
        if len(set(aliases)) != len(aliases):
            raise _invalid("services", "two services share an alias")
        if len(set(self.secrets)) != len(self.secrets):
            raise _invalid("secrets", "a secret is named twice")
        if self.matrix:
            combinations = 1
            for values in self.matrix.values():
                combinations *= len(values)
            if combinations > MAX_MATRIX:
                raise _invalid("matrix", f"{combinations} combinations, over the limit of {MAX_MATRIX}")
        return self


class Pipeline(_Strict):
    """The validated pipelines.yml."""

    on: Triggers | None = None
    image: Image | None = None
    env: Env = Field(default_factory=dict)
    stages: Annotated[list[Name], Field(min_length=1)] = Field(default_factory=lambda: ["test"])
    jobs: Annotated[dict[Name, Job], Field(min_length=1)]

    @model_validator(mode="after")
    def _jobs_fit_stages(self) -> Pipeline:
        # Raised as a ValidationError so that pydantic keeps each problem's own loc (e.g. jobs.lint.stage).
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        seen: set[str] = set()
        for index, stage in enumerate(self.stages):
            if stage in seen:
                problems.append((("stages", index), f"stage {stage!r} is listed twice", stage))
            seen.add(stage)
        for name, job in self.jobs.items():
            if job.stage is not None and job.stage not in seen:
                stages = ", ".join(self.stages)
                problems.append(
                    (("jobs", name, "stage"), f"{job.stage!r} is not one of stages [{stages}]", job.stage)
                )
            if job.image is None and self.image is None and job.image_build is None:
                problems.append(
                    (("jobs", name), f"job {name!r} has no image: give it one or set a top-level image", name)
                )
        problems += _needs_problems(self.jobs)
        if problems:
            raise ValidationError.from_exception_data(
                "Pipeline",
                [
                    {"type": _invalid("pipeline", message), "loc": loc, "input": value}
                    for loc, message, value in problems
                ],
            )
        return self


def _needs_problems(jobs: dict[str, Job]) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """Unknown names in `needs`, and cycles (named at the entry that closes them)."""
    problems: list[tuple[tuple[str | int, ...], str, Any]] = []
    for name, job in jobs.items():
        for index, need in enumerate(job.needs or []):
            if need not in jobs:
                problems.append((("jobs", name, "needs", index), f"no job is named {need!r}", need))
    if problems:
        return problems
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str) -> tuple[tuple[str | int, ...], str, Any] | None:
        state[name] = 1
        for index, need in enumerate(jobs[name].needs or []):
            if state.get(need) == 1:
                loc = ("jobs", name, "needs", index)
                return loc, f"needs {need!r}, which needs {name!r} in turn: a cycle", need
            if need not in state and (found := visit(need)):
                return found
        state[name] = 2
        return None

    for name in jobs:
        if name not in state and (cycle := visit(name)):
            return [cycle]
    return []
