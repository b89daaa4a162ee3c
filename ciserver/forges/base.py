"""What every forge shares: the internal webhook events, the errors, and a typed payload reader.

A forge module turns one forge's webhook into exactly one `WebhookEvent`. Everything that reaches
the rest of ciserver has been verified and type-checked here, so nothing downstream has to guess
at the shape of a forge's JSON.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError, model_validator


class WebhookError(Exception):
    """A webhook the server refuses; the API answers each kind with its own status and this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedPayload(WebhookError):
    """The payload lacks a field or has one of the wrong type; the message names the field."""


class BadSignature(WebhookError):
    """The signature or token is missing or wrong; the message names the header."""


class PushEvent(BaseModel, frozen=True):
    """A verified push to a branch or tag: what a build is made from."""

    forge: str
    repository: str
    ref: str
    branch: str | None
    tag: str | None
    before: str
    sha: str
    message: str
    author: str
    changed_files: list[str] | None
    deleted: bool
    forced: bool
    default_branch: str | None = None  # the repository's, as the forge reports it

    @model_validator(mode="after")
    def _consistent(self) -> PushEvent:
        # A backstop: parsers check all of this first, so a failure here is a parser bug.
        if not self.sha.strip("0") and not self.deleted:
            raise ValueError("sha: all zeros, but the ref was not deleted")
        if self.branch is not None and self.ref != f"refs/heads/{self.branch}":
            raise ValueError("branch: does not match the ref")
        if self.tag is not None and self.ref != f"refs/tags/{self.tag}":
            raise ValueError("tag: does not match the ref")
        if (self.branch is None) == (self.tag is None):
            raise ValueError("ref: must be exactly one of a branch or a tag")
        return self


class Ping(BaseModel, frozen=True):
    """The forge checking that the hook answers; `repository` is None for an organisation hook."""

    repository: str | None


class Ignored(BaseModel, frozen=True):
    """A well-formed delivery that builds nothing (another event, a ref outside heads and tags)."""

    repository: str | None
    reason: str


WebhookEvent = PushEvent | Ping | Ignored


class StatusState(enum.StrEnum):
    """A commit status in ciserver's words; each forge says it in its own (see its `status_request`)."""

    pending = "pending"
    running = "running"
    success = "success"
    failure = "failure"
    error = "error"
    canceled = "canceled"
    skipped = "skipped"


@dataclass(frozen=True)
class StatusReport:
    """One commit status to set: on `sha` (of `ref`), in `context`, linking to `target_url`."""

    sha: str
    ref: str
    context: str
    state: StatusState
    description: str
    target_url: str


@dataclass(frozen=True)
class ForgeRequest:
    """An HTTP request to a forge's API, made by a pure function and sent by the caller."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)


def capped(text: str, limit: int) -> str:
    """`text` on one line and at most `limit` characters, an ellipsis saying it was cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


class Forge(Protocol):
    """One forge's webhook: who sent it, whether to trust it, and what it means."""

    name: str
    repository_field: str  # where the payload names its repository, as messages name it

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        """The forge's id for this delivery, the same on a redelivery; None if absent."""
        ...

    def repository_path(self, payload: Any) -> str | None:
        """The repository whose secret verifies this delivery; None if the payload names none.

        Raises MalformedPayload when the payload is not an object or the field has the wrong type.
        """
        ...

    def repository_candidates(self, body: bytes) -> list[str]:
        """The few repositories an unparsed body may be for (see `scan`), in the order they appear."""
        ...

    def is_ping(self, headers: Mapping[str, str]) -> bool:
        """Whether the headers alone say this is the forge checking that the hook answers."""
        ...

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        """Raise BadSignature unless the delivery carries proof of `secret` over `body`."""
        ...

    def parse(self, headers: Mapping[str, str], payload: Any) -> WebhookEvent:
        """The event this delivery means; raises MalformedPayload and nothing else."""
        ...


class StatusForge(Protocol):
    """One forge's commit status API: where a status goes, in which words, and in how many contexts."""

    name: str
    default_api_url: str | None  # None: there is no public instance to default to
    per_job_statuses: bool  # a context per job besides the pipeline's (why: each forge's docstring)

    def status_request(self, api_url: str, repository: str, token: str, report: StatusReport) -> ForgeRequest:
        """The request that sets `report` on `repository` (OWNER/NAME) at `api_url`."""
        ...

    def status_already_set(self, code: int, body: str) -> bool:
        """Whether a refusal means the forge already shows this state (a repeat after a lost answer)."""
        ...


def make_push(**fields: Any) -> PushEvent:
    """Build a PushEvent, reporting a broken invariant as the payload's fault (never a 500)."""
    try:
        return PushEvent(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MalformedPayload(str(first.get("msg", "invalid push")).removeprefix("Value error, ")) from None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value looked up case-insensitively in a starlette Headers or any Mapping."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == wanted:
                value = candidate
                break
    return value if isinstance(value, str) else None


def delivery_header(headers: Mapping[str, str], *names: str) -> str | None:
    """The first of `names` holding a plausible delivery id (it becomes a database key)."""
    for name in names:
        value = (header(headers, name) or "").strip()
        if 0 < len(value) <= 200 and value.isascii() and value.isprintable():
            return value
    return None


_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def _describe(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


class Fields:
    """Typed access to one JSON object; every error names the dotted path of the field."""

    def __init__(self, data: Any, path: str = "") -> None:
        if not isinstance(data, dict):
            raise MalformedPayload(f"{path or 'body'}: expected an object, got {_describe(data)}")
        self.data = data
        self.path = path

    def where(self, key: str) -> str:
        """The dotted path of `key` in this object, as error messages name it."""
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise MalformedPayload(f"{self.where(key)}: missing")
        return self.data[key]

    def _wrong(self, key: str, expected: str, value: Any) -> MalformedPayload:
        return MalformedPayload(f"{self.where(key)}: expected {expected}, got {_describe(value)}")

    def text(self, key: str, *, allow_empty: bool = True) -> str:
        """A required string that git or a database could hold (no NUL, no lone surrogates)."""
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return check_text(value, self.where(key), allow_empty=allow_empty)

    def optional_text(self, key: str) -> str | None:
        """A string that may be absent or null."""
        if self.data.get(key) is None:
            return None
        return self.text(key)

    def flag(self, key: str) -> bool:
        """A required boolean."""
        value = self._get(key)
        if not isinstance(value, bool):
            raise self._wrong(key, "a boolean", value)
        return value

    def count(self, key: str) -> int:
        """A required non-negative integer."""
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "an integer", value)
        if value < 0:
            raise MalformedPayload(f"{self.where(key)}: must not be negative")
        return value

    def child(self, key: str) -> Fields:
        """A required nested object."""
        return Fields(self._get(key), self.where(key))

    def optional_child(self, key: str) -> Fields | None:
        """A nested object that may be absent or null."""
        if self.data.get(key) is None:
            return None
        return self.child(key)

    def children(self, key: str) -> list[Fields]:
        """A required array of objects."""
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "an array", value)
        return [Fields(item, f"{self.where(key)}[{index}]") for index, item in enumerate(value)]

    def optional_count(self, key: str) -> int | None:
        """A non-negative integer that may be absent or null."""
        if self.data.get(key) is None:
            return None
        return self.count(key)

    def optional_children(self, key: str) -> list[Fields]:
        """An array of objects that may be absent or null (then empty)."""
        if self.data.get(key) is None:
            return []
        return self.children(key)

    def texts(self, key: str) -> list[str]:
        """A required array of strings."""
        value = self._get(key)
        if not isinstance(value, list):
            raise self._wrong(key, "an array", value)
        where = self.where(key)
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise MalformedPayload(f"{where}[{index}]: expected a string, got {_describe(item)}")
            check_text(item, f"{where}[{index}]")
        return list(value)


def check_text(value: str, where: str, *, allow_empty: bool = True) -> str:
    """Refuse text no git object can contain and no database column can store."""
    if not value and not allow_empty:
        raise MalformedPayload(f"{where}: must not be empty")
    if "\x00" in value:
        raise MalformedPayload(f"{where}: contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedPayload(f"{where}: is not valid Unicode (a lone surrogate)") from None
    return value


# Each changed file is matched against every path pattern of the pipeline on a shared worker, and
# its name comes from the pusher: past these, the list counts as unknown (path rules never exclude),
# as a list the forge cut short does. 3,000 is the most files GitHub's compare lists; 4,096 bytes is
# Linux's PATH_MAX, so no checkout could hold a longer path.
MAX_CHANGED_FILES = 3000
MAX_CHANGED_PATH_BYTES = 4096


def files_changed(commits: list[Fields], max_per_commit: int | None = None) -> list[str] | None:
    """The sorted union of the files the commits added, modified or removed.

    None when a commit lists `max_per_commit` files or more (the forge cut that list short), when
    the union holds more than MAX_CHANGED_FILES, or a path is longer than MAX_CHANGED_PATH_BYTES.
    """
    files: set[str] = set()
    truncated = False
    for commit in commits:
        listed = [path for key in ("added", "modified", "removed") for path in commit.texts(key)]
        truncated = truncated or (max_per_commit is not None and len(listed) >= max_per_commit)
        truncated = truncated or any(len(path.encode()) > MAX_CHANGED_PATH_BYTES for path in listed)
        files.update(listed)
    return None if truncated or len(files) > MAX_CHANGED_FILES else sorted(files)


def signs_body(secret: str, body: bytes, hex_digest: str) -> bool:
    """Whether `hex_digest` (64 hexadecimal digits, checked by the caller) is HMAC-SHA256(secret, body),
    compared in constant time: how GitHub, Gitea and Forgejo sign a delivery."""
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return hmac.compare_digest(bytes.fromhex(hex_digest), expected)
