"""From a validated pipeline to what runs: which pushes are built, and the jobs in order."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from ciserver.pipeline.models import Pipeline


@dataclass(frozen=True)
class PlannedJob:
    name: str
    stage: str
    image: str
    script: list[str]
    env: dict[str, str]
    timeout: int  # seconds
    after: tuple[str, ...]  # the jobs that must end before this one starts


@lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    """GitHub's filter globs: `*` stays within a path segment, `**` crosses them, `?` is one character."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(_glob(p).match(name) for p in patterns)


def push_skip_reason(
    pipeline: Pipeline, *, branch: str | None, tag: str | None, changed_files: list[str] | None
) -> str | None:
    """None when the push is to be built, else why not (shown as the skipped build's reason).

    As in GitHub Actions: naming only branches leaves tags out, and the other way round; when
    the changed files are unknown (a new branch, a forced push) path filters never skip.
    """
    push = pipeline.on.push if pipeline.on else None
    if push is None:
        return None
    if branch is not None:
        if push.branches is not None and not matches(branch, push.branches):
            return f"branch {branch!r} is not in on.push.branches [{', '.join(push.branches)}]"
        if push.branches is None and push.tags is not None:
            return "branch pushes are not built: on.push names only tags"
    if tag is not None:
        if push.tags is not None and not matches(tag, push.tags):
            return f"tag {tag!r} is not in on.push.tags [{', '.join(push.tags)}]"
        if push.tags is None and push.branches is not None:
            return "tag pushes are not built: on.push names only branches"
    if changed_files:
        if push.paths is not None and not any(matches(f, push.paths) for f in changed_files):
            return f"no changed file matches on.push.paths [{', '.join(push.paths)}]"
        if push.paths_ignore is not None and all(matches(f, push.paths_ignore) for f in changed_files):
            return f"every changed file matches on.push.paths_ignore [{', '.join(push.paths_ignore)}]"
    return None


def plan_jobs(pipeline: Pipeline, default_timeout: int = 3600) -> list[PlannedJob]:
    """Jobs in stage order (then file order); each waits for every job of the stage before it."""
    by_stage: dict[str, list[str]] = {stage: [] for stage in pipeline.stages}
    for name, job in pipeline.jobs.items():
        by_stage[job.stage or pipeline.stages[0]].append(name)
    planned: list[PlannedJob] = []
    previous: tuple[str, ...] = ()
    for stage, names in by_stage.items():
        for name in names:
            job = pipeline.jobs[name]
            planned.append(
                PlannedJob(
                    name=name,
                    stage=stage,
                    image=job.image or pipeline.image or "",
                    script=list(job.script),
                    env={**pipeline.env, **job.env},
                    timeout=job.timeout or default_timeout,
                    after=previous,
                )
            )
        if names:
            previous = tuple(names)
    return planned
