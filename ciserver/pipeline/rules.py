"""Which pushes and refs a pipeline's rules take: a job's only/except, the file's on.push filters,
and an environment's branches/tags; with the reason, when a push is not built at all.

Every match one push asks for draws on one MatchBudget (ciserver.pipeline.globs): changed files too
costly to match count as unknown, as a list the forge cut short does.
"""

from __future__ import annotations

from typing import Protocol

from ciserver.pipeline.globs import MatchBudget, MatchTooCostly, matches
from ciserver.pipeline.models import Job, Pipeline, PushFilter, Rules

# Steps the glob matcher may take to plan one push (a few seconds on a 2-core worker): patterns
# and changed files both come from the pusher, and their product has no other bound.
MATCH_STEPS = 5_000_000


def job_runs(
    job: Job,
    *,
    branch: str | None,
    tag: str | None,
    changed_files: list[str] | None,
    budget: MatchBudget | None = None,
) -> bool:
    """GitLab's only/except: every `only` list matches, and no `except` list does. Unknown changed
    files (a first or forced push) never exclude: `only.paths` counts as matched, `except.paths` not."""
    if job.only is not None and not _only_matches(job.only, branch, tag, changed_files, budget):
        return False
    return not (job.except_ is not None and _except_matches(job.except_, branch, tag, changed_files, budget))


def _only_matches(
    rules: Rules, branch: str | None, tag: str | None, changed: list[str] | None, budget: MatchBudget | None
) -> bool:
    """A push is a branch or a tag, so `branches` and `tags` together are one condition: the pushed
    ref matches the list of its kind. `paths` is the other: some changed file matches."""
    names_refs = rules.branches is not None or rules.tags is not None
    if names_refs and not (
        _ref_matches(rules.branches, branch, budget) or _ref_matches(rules.tags, tag, budget)
    ):
        return False
    if rules.paths is None or changed is None:
        return True
    return any(matches(rules.paths, path, budget) for path in changed)


def _except_matches(
    rules: Rules, branch: str | None, tag: str | None, changed: list[str] | None, budget: MatchBudget | None
) -> bool:
    if _ref_matches(rules.branches, branch, budget) or _ref_matches(rules.tags, tag, budget):
        return True
    paths = rules.paths
    return paths is not None and changed is not None and any(matches(paths, p, budget) for p in changed)


def _ref_matches(patterns: list[str] | None, ref: str | None, budget: MatchBudget | None = None) -> bool:
    return patterns is not None and ref is not None and matches(patterns, ref, budget)


class RefRules(Protocol):
    """Which refs may deploy to an environment: its file's `branches`/`tags`, or the server's rules."""

    @property
    def branches(self) -> list[str] | None: ...

    @property
    def tags(self) -> list[str] | None: ...


def accepts_release(
    rules: RefRules, *, branch: str | None, tag: str | None, default_branch: str | None
) -> bool:
    """Whether these rules take releases of this push: their `branches`/`tags` globs, or with
    neither, the repository's default branch (main when the forge did not say)."""
    if rules.branches is None and rules.tags is None:
        return branch is not None and branch == (default_branch or "main")
    return _ref_matches(rules.branches, branch) or _ref_matches(rules.tags, tag)


def accepted_refs(rules: RefRules, default_branch: str | None) -> str:
    """The refs these rules take, as a person would read them in an error."""
    if rules.branches is None and rules.tags is None:
        return f"the default branch {default_branch or 'main'!r}"
    parts = []
    if rules.branches is not None:
        parts.append(f"branches {_listed(rules.branches)}")
    if rules.tags is not None:
        parts.append(f"tags {_listed(rules.tags)}")
    return " and ".join(parts)


def push_skip_reason(
    pipeline: Pipeline, *, branch: str | None, tag: str | None, changed_files: list[str] | None
) -> str | None:
    """None when the push should be built; otherwise a human reason such as
    "branch 'dev' is not in on.push.branches [main, release/*]".

    The filters mean what they mean in GitHub Actions: naming branches but not tags leaves tag
    pushes out (and the other way round), and path filters are not applied to tags. When the changed
    files are unknown (None: a new branch, a forced push), or too costly to match, path filters
    never skip; nor do branch and tag filters too costly to match (planning then says so).
    """
    push = pipeline.on.push if pipeline.on else None
    if push is None:
        return None
    for changed in (changed_files, None):
        try:
            return _skip_reason(push, branch, tag, changed, MatchBudget(MATCH_STEPS))
        except MatchTooCostly:
            continue
    return None


def _skip_reason(
    push: PushFilter, branch: str | None, tag: str | None, changed: list[str] | None, budget: MatchBudget
) -> str | None:
    if tag is not None:
        return _ref_reason(("tag", "tags"), tag, push.tags, "branches", push.branches, budget)
    if branch is not None:
        reason = _ref_reason(("branch", "branches"), branch, push.branches, "tags", push.tags, budget)
        if reason:
            return reason
    elif push.branches is not None or push.tags is not None:
        return "the push names neither a branch nor a tag, and on.push filters by them"
    return _paths_reason(push, changed, budget)


def _ref_reason(
    kinds: tuple[str, str],
    name: str,
    patterns: list[str] | None,
    other: str,
    other_patterns: list[str] | None,
    budget: MatchBudget,
) -> str | None:
    kind, plural = kinds
    if patterns is not None:
        if matches(patterns, name, budget):
            return None
        return f"{kind} {name!r} is not in on.push.{plural} {_listed(patterns)}"
    if other_patterns is not None:
        return (
            f"{kind} {name!r} is not built: on.push names {other} {_listed(other_patterns)} and no {plural}"
        )
    return None


def _paths_reason(push: PushFilter, changed_files: list[str] | None, budget: MatchBudget) -> str | None:
    paths, ignored = push.paths, push.paths_ignore
    if changed_files is None or (paths is None and ignored is None):
        return None
    for path in changed_files:
        if (paths is None or matches(paths, path, budget)) and not (
            ignored is not None and matches(ignored, path, budget)
        ):
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
