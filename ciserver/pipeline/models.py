"""The pipeline file as pydantic models: every key pipelines.yml may hold, each checked on its own,
and the checks that need two keys at once (a job's stage among `stages`, an image for every job).

Unknown keys are refused everywhere (extra="forbid"). Errors are pydantic errors with the `loc` of the
offending key, which the loader turns into a file and line."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError, ValidationError

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


Name = Annotated[str, AfterValidator(_name)]
Image = Annotated[str, AfterValidator(_image)]
Env = dict[
    Annotated[str, AfterValidator(_env_name)],
    Annotated[str, BeforeValidator(_env_value), AfterValidator(_no_nul)],
]
Script = Annotated[
    list[Annotated[str, AfterValidator(_no_nul)]], BeforeValidator(_one_or_many), Field(min_length=1)
]
Timeout = Annotated[int, BeforeValidator(_seconds)]
Patterns = Annotated[list[str], BeforeValidator(_one_or_many), AfterValidator(_patterns)]


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


class Job(_Strict):
    """jobs.<name>: what one container runs. Unset keys fall back on the pipeline's, at planning."""

    stage: Name | None = None
    image: Image | None = None
    script: Script
    env: Env = Field(default_factory=dict)
    timeout: Timeout | None = None


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
            if job.image is None and self.image is None:
                problems.append(
                    (("jobs", name), f"job {name!r} has no image: give it one or set a top-level image", name)
                )
        if problems:
            raise ValidationError.from_exception_data(
                "Pipeline",
                [
                    {"type": _invalid("pipeline", message), "loc": loc, "input": value}
                    for loc, message, value in problems
                ],
            )
        return self
