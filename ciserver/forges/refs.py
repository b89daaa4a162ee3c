"""Validation of the git refs and object ids a forge sends, before anything hands them to git.

A ref from a webhook later becomes an argument to git on a worker. A name that git itself would
refuse (`git check-ref-format`), or one that starts with "-" and could be read as an option
(`--upload-pack=...`), is refused here as a malformed payload. Characters git allows, shell
metacharacters included, are valid data and are passed through unchanged: quoting is the job
of whoever builds a command line, not of the parser.
"""

from __future__ import annotations

import re

from ciserver.forges.base import MalformedPayload

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"

# The longest ref the store keeps (its ref, branch and tag columns): a longer one would be refused by
# PostgreSQL, which enforces column lengths, and silently kept by SQLite, which does not.
MAX_REF_LENGTH = 1024
_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")
# git check-ref-format rules 4, 5 and 10: control characters, space, ~ ^ : ? * [ and backslash.
_FORBIDDEN_CHAR = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def is_zero_sha(sha: str) -> bool:
    """True for the all-zeros id a forge sends for the missing side of a created or deleted ref."""
    return bool(sha) and not sha.strip("0")


def check_sha(value: str, where: str) -> str:
    """`value` as a lowercase 40 (SHA-1) or 64 (SHA-256) hex object id, or MalformedPayload."""
    if not _SHA.fullmatch(value):
        raise MalformedPayload(f"{where}: expected 40 or 64 hexadecimal digits, got {_shorten(value)}")
    return value.lower()


def ref_problem(ref: str) -> str | None:
    """Why git would refuse `ref` as a ref name (or why we do), or None if it is acceptable."""
    if not ref:
        return "is empty"
    if len(ref) > MAX_REF_LENGTH:
        return f"is longer than {MAX_REF_LENGTH} characters"
    if ref.startswith("-"):
        return "starts with '-'"
    if "/" not in ref:
        return "has no '/' (a full ref such as refs/heads/main is expected)"
    if ref.startswith("/") or ref.endswith("/"):
        return "starts or ends with '/'"
    if "//" in ref:
        return "contains '//'"
    if ".." in ref:
        return "contains '..'"
    if "@{" in ref:
        return "contains '@{'"
    if ref.endswith("."):
        return "ends with '.'"
    for component in ref.split("/"):
        if component.startswith("-"):
            return f"has a component starting with '-' ({_shorten(component)})"
        if component.startswith("."):
            return f"has a component starting with '.' ({_shorten(component)})"
        if component.endswith(".lock"):
            return f"has a component ending with '.lock' ({_shorten(component)})"
    forbidden = _FORBIDDEN_CHAR.search(ref)
    if forbidden:
        return f"contains the character {forbidden.group()!r}"
    return None


def check_ref(value: str, where: str) -> str:
    """`value` unchanged if it is a valid full ref name, else MalformedPayload naming the rule."""
    problem = ref_problem(value)
    if problem:
        raise MalformedPayload(f"{where}: {problem}")
    return value


def branch_and_tag(ref: str) -> tuple[str | None, str | None]:
    """(branch, tag) short names of a valid ref; (None, None) for a ref outside heads and tags."""
    if ref.startswith(BRANCH_PREFIX):
        return ref.removeprefix(BRANCH_PREFIX), None
    if ref.startswith(TAG_PREFIX):
        return None, ref.removeprefix(TAG_PREFIX)
    return None, None


def _shorten(value: str, limit: int = 80) -> str:
    """A value quoted for an error message, cut short so a hostile payload cannot flood a log."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
