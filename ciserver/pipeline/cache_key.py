"""Cache keys: literal text with `{{ hashFiles('path', ...) }}` in it, as in GitHub Actions.

Parsed here, once, for both sides: the loader refuses a key the worker could not render, and the
worker renders the parts (it hashes the files; this module does no I/O).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_CALL = re.compile(r"\s*hashFiles\((.*)\)\s*", re.DOTALL)
_ARGUMENT = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)")\s*""")
_USAGE = "write {{ hashFiles('requirements.txt', 'src/**/*.lock') }}"


@dataclass(frozen=True)
class HashFiles:
    """`{{ hashFiles('a', 'b/*.txt') }}`: the worker puts a hash of the files these globs match here."""

    patterns: tuple[str, ...]


def workspace_path_problem(path: str) -> str | None:
    """Why `path` could lead out of the workspace (absolute, a `..`, empty, NUL), or None when it is fine."""
    parts = path.replace("\\", "/").split("/")
    if not path or path.startswith(("/", "\\")) or ".." in parts or "\0" in path:
        return f"{path!r} must be a relative path that stays inside the workspace (no '..', no '/' first)"
    return None


def cache_key_parts(template: str) -> list[str | HashFiles]:
    """The key's literal runs and hashFiles calls, in order, for the worker to render:
    "pip-{{ hashFiles('a.txt') }}" -> ["pip-", HashFiles(("a.txt",))]. ValueError for anything
    else between {{ }}, a stray `{{` or `}}`, or a path that leaves the workspace."""
    parts: list[str | HashFiles] = []
    position = 0
    for match in _EXPRESSION.finditer(template):
        parts += _literal(template[position : match.start()])
        parts.append(_hash_files(match.group(1)))
        position = match.end()
    return parts + _literal(template[position:])


def _literal(text: str) -> list[str | HashFiles]:
    if "{{" in text or "}}" in text:
        raise ValueError(f"unbalanced '{{{{' or '}}}}' in the key: {_USAGE}")
    return [text] if text else []


def _hash_files(expression: str) -> HashFiles:
    """The inside of one {{ }}: hashFiles with one or more quoted paths, separated by commas."""
    call = _CALL.fullmatch(expression)
    if not call:
        raise ValueError(f"{{{{{expression}}}}} is not understood: only hashFiles is, {_USAGE}")
    arguments, patterns, position = call.group(1), [], 0
    while True:
        argument = _ARGUMENT.match(arguments, position)
        if not argument:
            raise ValueError(f"hashFiles takes quoted paths separated by commas: {_USAGE}")
        path = argument.group(1) if argument.group(1) is not None else argument.group(2)
        if problem := workspace_path_problem(path):
            raise ValueError(problem)
        patterns.append(path)
        position = argument.end()
        if position == len(arguments):
            return HashFiles(tuple(patterns))
        if arguments[position] != ",":
            raise ValueError(f"hashFiles takes quoted paths separated by commas: {_USAGE}")
        position += 1
