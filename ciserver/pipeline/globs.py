"""Globs as GitHub's filter patterns read them, for branches, tags, changed files and workspace paths.

`*` is any run of characters but '/', `**` any run at all (`**/` also none), `?` and `+` make the
character or [class] before them optional or repeated, `\\` escapes. Matched by stepping a set of
positions through the text (an NFA), never by backtracking, so one match costs at most the pattern's
length times the text's. The pattern and the text may both come from a pusher (a pipeline file, the
names of the files a push changed), and one push may ask for many matches on a shared worker: a
`MatchBudget` caps the steps all of them may take together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

GLOB_CHARACTERS = "*?+[\\"
# What a call costs besides its steps, in steps (a step is about 0.35 us on a 2-core worker).
CALL_STEPS = 20


class MatchTooCostly(Exception):
    """The matches asked for would take more steps than their budget allows."""


class MatchBudget:
    """Steps (a position of a pattern moved over a character) that a group of matches may take."""

    def __init__(self, steps: int) -> None:
        self.limit = self.left = steps

    def charge(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise MatchTooCostly(f"matching took over {self.limit:,} steps")


def matches(patterns: list[str], value: str, budget: MatchBudget | None = None) -> bool:
    """GitHub's rule for a filter list: patterns apply in order, a later '!pattern' takes back a match."""
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            matched = matched and not glob_match(pattern[1:], value, budget)
        else:
            matched = matched or glob_match(pattern, value, budget)
    return matched


def is_glob(pattern: str) -> bool:
    return any(char in pattern for char in GLOB_CHARACTERS)


@dataclass(frozen=True)
class _Step:
    """One position in a glob: which characters it takes, and whether it may be skipped or repeated."""

    takes: Callable[[str], bool]
    optional: bool = False
    repeats: bool = False
    skips_slash: bool = False  # `**/` may also skip its '/', to match no directory at all


def glob_match(pattern: str, text: str, budget: MatchBudget | None = None) -> bool:
    """Whether all of `text` matches `pattern`; each character costs `budget` the positions it moves.
    A text that lacks the pattern's literal start or end is refused first, at no cost."""
    prefix, suffix = _literal_ends(pattern)
    if not text.startswith(prefix) or not text.endswith(suffix) or len(text) < len(prefix) + len(suffix):
        if budget is not None:
            budget.charge(CALL_STEPS // 4)
        return False
    if budget is not None:
        budget.charge(CALL_STEPS)
    steps = _compile(pattern)
    positions = _closure(steps, {0})
    for char in text:
        if budget is not None:
            budget.charge(len(positions))
        taken = {
            i if steps[i].repeats else i + 1 for i in positions if i < len(steps) and steps[i].takes(char)
        }
        if not taken:
            return False
        positions = _closure(steps, taken)
    return len(steps) in positions


@lru_cache(maxsize=1024)
def _literal_ends(pattern: str) -> tuple[str, str]:
    """The plain text every match starts and ends with (a character a `?` or `+` quantifies is not)."""
    special = "*?+[]\\"
    start = 0
    while start < len(pattern) and pattern[start] not in special:
        start += 1
    if 0 < start < len(pattern) and pattern[start] in "?+":
        start -= 1
    if start == len(pattern):
        return pattern, ""
    end = len(pattern)
    while end > 0 and pattern[end - 1] not in special:
        end -= 1
    if end > 0 and pattern[end - 1] == "\\":
        end += 1  # the escaped character may be a special one: leave it to the matcher
    elif pattern.endswith("**/", 0, end + 1):
        end += 1  # `**/` may skip its '/'
    return pattern[:start], pattern[end:]


def _closure(steps: tuple[_Step, ...], positions: set[int]) -> set[int]:
    """The positions reachable without taking a character: past optional steps."""
    todo = list(positions)
    while todo:
        i = todo.pop()
        if i < len(steps) and steps[i].optional:
            for j in (i + 1, i + 2) if steps[i].skips_slash else (i + 1,):
                if j not in positions:
                    positions.add(j)
                    todo.append(j)
    return positions


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> tuple[_Step, ...]:
    steps: list[_Step] = []
    quantifiable = False  # `?` and `+` apply only to the character or class just before them
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            steps.append(_Step(_any, optional=True, repeats=True, skips_slash=pattern.startswith("/", i + 2)))
            i, quantifiable = i + 2, False
        elif char == "*":
            steps.append(_Step(_not_slash, optional=True, repeats=True))
            i, quantifiable = i + 1, False
        elif char in "?+" and quantifiable:
            repeated = replace(steps[-1], optional=True, repeats=True)
            steps[-1:] = [replace(steps[-1], optional=True)] if char == "?" else [steps[-1], repeated]
            i, quantifiable = i + 1, False
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            steps.append(_Step(_char_class(pattern[i + 1 : end])))
            i, quantifiable = end + 1, True
        else:
            if char == "\\" and i + 1 < len(pattern):
                i += 1
                char = pattern[i]
            steps.append(_Step(char.__eq__))
            i, quantifiable = i + 1, True
    return tuple(steps)


def _char_class(body: str) -> Callable[[str], bool]:
    """[abc] or [a-z0-9]: one character from the list or the ranges."""
    ranges: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            ranges.append((body[i], body[i + 2]))
            i += 3
        else:
            ranges.append((body[i], body[i]))
            i += 1
    return lambda char: any(low <= char <= high for low, high in ranges)


def _any(char: str) -> bool:
    return True


def _not_slash(char: str) -> bool:
    return char != "/"
