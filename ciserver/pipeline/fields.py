"""The pipeline file's value types: names, images, durations, sizes, paths, and their checks, shared
by the job models (pipeline.models) and the deployment models (pipeline.environments).

Errors are pydantic custom errors; the loader turns them into a file, a line and a key.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError, ValidationError

from ciserver.pipeline.cache_key import cache_key_parts, workspace_path_problem
from ciserver.units import parse_duration, parse_size

MAX_NAME_LENGTH = 100
MAX_TIMEOUT = 30 * 24 * 3600  # a month: past that a number is a typo, and it must fit in a database column
MAX_MATRIX = 100  # combinations of one job's matrix
MAX_RETRY = 5
# A glob costs its length times the text's length to match, on a shared worker, for every ref and
# changed file of a push: GitHub's own filters are a few dozen characters, a few per list.
MAX_PATTERN_LENGTH = 256
MAX_PATTERNS = 100  # in one list
MAX_EXPIRE_IN = 10 * 365 * 24 * 3600
DEFAULT_EXPIRE_IN = 30 * 24 * 3600
DEFAULT_CACHE_KEY = "default"  # also what an empty `cache.key` stands for

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str, Any]  # where, what, the value found there

_DURATION = re.compile(r"(?:([0-9]{1,9})h)?(?:([0-9]{1,9})m)?(?:([0-9]{1,9})s)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ALIAS = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def invalid(kind: str, message: str) -> PydanticCustomError:
    # No context is given, so pydantic leaves braces in the message (user text) alone.
    return PydanticCustomError(kind, message)


def fail(title: str, problems: list[Problem]) -> ValidationError:
    """Several problems at once, each at its own loc (relative to the model being validated)."""
    return ValidationError.from_exception_data(
        title,
        [
            {"type": invalid("pipeline", message), "loc": loc, "input": value}
            for loc, message, value in problems
        ],
    )


def _one_or_many(value: Any) -> Any:
    """A single string stands for a list of one, as people write `script: make test`."""
    return [value] if isinstance(value, str) else value


def _name(value: str) -> str:
    """Job and stage names show up in the dashboard, logs and container labels."""
    if not value:
        raise invalid("name", "a name must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise invalid("name", f"a name must be at most {MAX_NAME_LENGTH} characters")
    if not value.isprintable():
        raise invalid("name", f"{value!r} contains a tab, newline or other unprintable character")
    return value


def _image(value: str) -> str:
    """An image name becomes a Docker argument: nothing that could read as an option or split."""
    if not value or value.startswith("-") or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise invalid(
            "image", f"invalid image {value!r}: not empty, no leading '-', no spaces or control characters"
        )
    return value


def _no_nul(value: str) -> str:
    """NUL cannot cross into a process's arguments or environment."""
    if "\0" in value:
        raise invalid("nul", "must not contain a NUL character")
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise invalid(
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
    raise invalid("env_value", 'expected a string, number or boolean (write "" for an empty value)')


def _seconds(value: Any) -> int:
    """A timeout: "90s", "10m", "1h30m", "2h", or an int of seconds (also quoted)."""
    if isinstance(value, str) and re.fullmatch("[0-9]{1,9}", value):
        value = int(value)
    match = _DURATION.fullmatch(value) if isinstance(value, str) and value else None
    if match:
        hours, minutes, seconds = (int(group or 0) for group in match.groups())
        value = hours * 3600 + minutes * 60 + seconds
    elif not isinstance(value, int) or isinstance(value, bool):
        raise invalid("duration", f"invalid duration {value!r} (use 90s, 10m, 1h30m or seconds)")
    if not 0 < value <= MAX_TIMEOUT:
        raise invalid("duration", f"a timeout must be more than 0s and at most 30 days, not {value}s")
    return value


def _patterns(values: list[str]) -> list[str]:
    """Filter patterns, GitHub style: a leading '!' excludes, so a list needs one that includes."""
    if len(values) > MAX_PATTERNS:
        raise invalid("pattern", f"{len(values)} patterns, over the limit of {MAX_PATTERNS} in one list")
    if any(pattern in ("", "!") for pattern in values):
        raise invalid("pattern", "a pattern must not be empty")
    for pattern in values:
        if len(pattern) > MAX_PATTERN_LENGTH:
            message = f"{len(pattern)} characters long, over the limit of {MAX_PATTERN_LENGTH}"
            raise invalid("pattern", f"{pattern[:40]!r}... is {message}")
    if values and all(pattern.startswith("!") for pattern in values):
        raise invalid("pattern", "needs at least one pattern without '!' (a '!' only excludes)")
    return values


def _workspace_path(value: str) -> str:
    """A path a job names inside its workspace: relative, no `..`, so it cannot lead out."""
    if problem := workspace_path_problem(value):
        raise invalid("path", problem)
    return value


def cache_key_template(value: str) -> str:
    """Literal text and `{{ hashFiles('path', ...) }}`, nothing else between braces."""
    try:
        cache_key_parts(value)
    except ValueError as exc:
        raise invalid("cache_key", str(exc)) from None
    return value


def _command(value: Any) -> Any:
    """A service's command as a string is split into words as a shell (and Docker Compose) would."""
    if not isinstance(value, str):
        return value
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise invalid("command", f"cannot split {value!r} into words: {exc}") from None


def positive(value: float) -> float:
    if value <= 0:
        raise invalid("positive", f"must be more than 0, not {value}")
    return value


def docker_user(value: str) -> str:
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
        raise invalid("user", message)
    return value


def size_bytes(value: Any) -> int:
    try:
        size = parse_size(value)
    except (ValueError, AttributeError) as exc:
        raise invalid("size", str(exc)) from None
    if size <= 0:
        raise invalid("size", "must be more than 0")
    return size


def expire_seconds(value: Any) -> int:
    try:
        seconds = parse_duration(value)
    except (ValueError, AttributeError) as exc:
        raise invalid("duration", str(exc)) from None
    if not 0 < seconds <= MAX_EXPIRE_IN:
        raise invalid("duration", "must be more than 0s and at most 10 years")
    return seconds


def retry_shorthand(value: Any) -> Any:
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
EXPIRE_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": "^([0-9]+|(?=[0-9])([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?)$"},
            {"type": "integer", "minimum": 1, "maximum": MAX_EXPIRE_IN},
        ]
    }
)
SIZE_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": r"^\s*[0-9]+\s*[kmgtKMGT]?([iI]?[bB])?\s*$"},
            {"type": "integer", "minimum": 1},
        ]
    }
)
_STRINGS = WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
_PATTERN = {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN_LENGTH}
_PATTERNS_SCHEMA = WithJsonSchema(
    {"anyOf": [_PATTERN, {"type": "array", "items": _PATTERN, "maxItems": MAX_PATTERNS}]}
)
# Relative, not empty, no NUL, no `..` component (with / or \ as separators).
_PATH = {"type": "string", "pattern": r"^(?![/\\])(?!(.*[/\\])?\.\.([/\\]|$))[^\x00]+$"}
_PATHS_SCHEMA = WithJsonSchema({"anyOf": [_PATH, {"type": "array", "items": _PATH, "minItems": 1}]})
ALIAS_SCHEMA = WithJsonSchema({"type": "string", "pattern": f"^{ALIAS.pattern}$"})
USER_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "maxLength": 256,
        "pattern": rf"^[^-:\s{_NO_CONTROL}][^:\s{_NO_CONTROL}]*(:[^:\s{_NO_CONTROL}]+)?$",
    }
)


def retry_schema(schema: dict[str, Any]) -> None:
    """`retry: 2`: the validator takes a bare number too, which the Retry model's schema does not say."""
    shorthand = {"type": "integer", "minimum": 0, "maximum": MAX_RETRY, "description": "Short for {max: N}."}
    schema["anyOf"].insert(0, shorthand)


def keys_schema(schema: dict[str, Any]) -> None:
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
Patterns = Annotated[list[str], BeforeValidator(_one_or_many), AfterValidator(_patterns), _PATTERNS_SCHEMA]
WorkspacePath = Annotated[str, AfterValidator(_workspace_path), WithJsonSchema(_PATH)]
Paths = Annotated[list[WorkspacePath], BeforeValidator(_one_or_many), Field(min_length=1), _PATHS_SCHEMA]
Command = Annotated[
    list[Annotated[str, AfterValidator(_no_nul)]], BeforeValidator(_command), Field(min_length=1), _STRINGS
]
MatrixValue = Annotated[str, BeforeValidator(_env_value), AfterValidator(_no_nul), _SCALAR]
User = Annotated[str, AfterValidator(docker_user), USER_SCHEMA]
Network = Literal["default", "none"]
Matrix = Annotated[dict[EnvName, Annotated[list[MatrixValue], Field(min_length=1)]], Field(min_length=1)]


class Strict(BaseModel):
    """Unknown keys are errors; field docstrings become the JSON Schema's descriptions."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
