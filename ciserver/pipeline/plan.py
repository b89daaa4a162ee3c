"""From a validated pipeline to what runs: whether a push is built at all, and its jobs in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

from ciserver.pipeline.models import Pipeline, PushFilter


@dataclass(frozen=True)
class PlannedJob:
    """One job with every default applied: what the store records and a worker runs."""

    name: str
    stage: str
    image: str
    script: list[str]
    env: dict[str, str]
    timeout: int  # seconds
    after: tuple[str, ...]  # every job of the previous non-empty stage: all must finish first


def plan_jobs(pipeline: Pipeline, default_timeout: int = 3600) -> list[PlannedJob]:
    """The jobs in stage order, then file order; a stage with no jobs is passed over."""
    by_stage: dict[str, list[str]] = {stage: [] for stage in pipeline.stages}
    for name, job in pipeline.jobs.items():
        by_stage[job.stage or pipeline.stages[0]].append(name)
    planned: list[PlannedJob] = []
    after: tuple[str, ...] = ()
    for stage, names in by_stage.items():
        for name in names:
            job = pipeline.jobs[name]
            image = job.image or pipeline.image
            assert image is not None  # Pipeline refuses a job without an image
            env = {**pipeline.env, **job.env}
            timeout = job.timeout or default_timeout
            planned.append(PlannedJob(name, stage, image, list(job.script), env, timeout, after))
        if names:
            after = tuple(names)
    return planned


def push_skip_reason(
    pipeline: Pipeline, *, branch: str | None, tag: str | None, changed_files: list[str] | None
) -> str | None:
    """None when the push should be built; otherwise a human reason such as
    "branch 'dev' is not in on.push.branches [main, release/*]".

    The filters mean what they mean in GitHub Actions: naming branches but not tags leaves tag
    pushes out (and the other way round), and path filters are not applied to tags. When the changed
    files are unknown (None: a new branch, a forced push), path filters never skip.
    """
    push = pipeline.on.push if pipeline.on else None
    if push is None:
        return None
    if tag is not None:
        return _ref_reason(("tag", "tags"), tag, push.tags, "branches", push.branches)
    if branch is not None:
        reason = _ref_reason(("branch", "branches"), branch, push.branches, "tags", push.tags)
        if reason:
            return reason
    elif push.branches is not None or push.tags is not None:
        return "the push names neither a branch nor a tag, and on.push filters by them"
    return _paths_reason(push, changed_files)


def _ref_reason(
    kinds: tuple[str, str],
    name: str,
    patterns: list[str] | None,
    other: str,
    other_patterns: list[str] | None,
) -> str | None:
    kind, plural = kinds
    if patterns is not None:
        if matches(patterns, name):
            return None
        return f"{kind} {name!r} is not in on.push.{plural} {_listed(patterns)}"
    if other_patterns is not None:
        return (
            f"{kind} {name!r} is not built: on.push names {other} {_listed(other_patterns)} and no {plural}"
        )
    return None


def _paths_reason(push: PushFilter, changed_files: list[str] | None) -> str | None:
    paths, ignored = push.paths, push.paths_ignore
    if changed_files is None or (paths is None and ignored is None):
        return None
    for path in changed_files:
        if (paths is None or matches(paths, path)) and not (ignored is not None and matches(ignored, path)):
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


def matches(patterns: list[str], value: str) -> bool:
    """GitHub's rule for a filter list: patterns apply in order, a later '!pattern' takes back a match."""
    matched = False
    for pattern in patterns:
        if pattern.startswith("!"):
            matched = matched and not glob_match(pattern[1:], value)
        else:
            matched = matched or glob_match(pattern, value)
    return matched


# Globs as GitHub's filter patterns read them: `*` is any run of characters but '/', `**` any run at
# all (`**/` also none), `?` and `+` make the character or [class] before them optional or repeated,
# `\` escapes. Matched by stepping a set of positions through the text (an NFA), never by
# backtracking, so no pattern can make a push take long to decide.


@dataclass(frozen=True)
class _Step:
    """One position in a glob: which characters it takes, and whether it may be skipped or repeated."""

    takes: Callable[[str], bool]
    optional: bool = False
    repeats: bool = False
    skips_slash: bool = False  # `**/` may also skip its '/', to match no directory at all


def glob_match(pattern: str, text: str) -> bool:
    """Whether all of `text` matches `pattern`."""
    steps = _compile(pattern)
    positions = _closure(steps, {0})
    for char in text:
        taken = {
            i if steps[i].repeats else i + 1 for i in positions if i < len(steps) and steps[i].takes(char)
        }
        if not taken:
            return False
        positions = _closure(steps, taken)
    return len(steps) in positions


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
