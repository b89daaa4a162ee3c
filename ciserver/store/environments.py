"""Environments as the server keeps them: where each listens and how it deploys (declared by builds of
the default branch only), and its rules (which refs may deploy, whether a promote is required, who may
promote), set by ops or taken from the first declaration.

A pushed file only asks within these: it may narrow (leave an environment out, `auto: false`), never
create an environment from another ref, widen its rules, or move its listen or strategy. This is
GitLab's protected environments and GitHub's deployment branch rules, decided in one place for
releases, promotes, automatic follows, claims and jobs alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ciserver.pipeline import Environment as Declared
from ciserver.pipeline import Strategy, accepted_refs, accepts_release, listens_overlap, normalize_listen
from ciserver.store.models import Build, Environment, Project, Role, utcnow


@dataclass(frozen=True)
class _Refs:
    branches: list[str] | None = None
    tags: list[str] | None = None


DEFAULT_BRANCH_ONLY = _Refs()  # the rule of an environment the server has no rules for


def find(session: Session, project_id: int, name: str, *, lock: bool = False) -> Environment | None:
    query = select(Environment).where(Environment.project_id == project_id, Environment.name == name)
    if lock:  # FOR UPDATE OF: not the release joined in; fresh values, not the session's older copy
        query = query.with_for_update(of=Environment).execution_options(populate_existing=True)
    return session.scalar(query)


def default_branch(build: Build) -> str:
    """The repository's default branch as the forge reported it in the signed push (main if not)."""
    return build.default_branch or "main"


def on_default_branch(build: Build) -> bool:
    return build.tag is None and build.branch == default_branch(build)


def _ref(build: Build) -> str:
    return f"branch {build.branch!r}" if build.branch else f"tag {build.tag!r}"


def promote_role(row: Environment | None) -> Role:
    """The least role that may promote, roll back, pause, resume or abort here (ops by default)."""
    return Role[row.promote_role] if row is not None and row.promote_role else Role.ops


def declare(session: Session, build: Build, name: str, declared: Declared) -> str | None:
    """A default-branch build's `environments.<name>`: creates the environment (its rules from the file
    unless ops set some first), or moves its listen, strategy and after. Returns why not, if it cannot
    (its listen is where another environment serves)."""
    row = find(session, build.project_id, name, lock=True)
    if row is None or not same_listen(row.listen, declared.listen):
        taken = declared.listen and listen_conflict(session, row.id if row else None, declared.listen)
        if taken:
            return taken
    if row is None:
        row = Environment(project_id=build.project_id, name=name)
        session.add(row)
    row.listen, row.after = declared.listen, declared.after
    row.strategy = _dumped(declared.strategy)
    row.declared_at, row.declared_by = utcnow(), f"build {build.id} of {build.branch}"
    if row.rules_by is None:
        row.branches, row.tags = declared.branches, declared.tags
        row.require_promote = not declared.auto
        row.rules_by = row.declared_by
    session.flush()
    return None


def refusal(row: Environment | None, name: str, declared: Declared, build: Build) -> str | None:
    """Why the release of `build` may not go to environment `name` (None: it may). `declared` is what
    the build's own file says of it."""
    default = default_branch(build)
    if row is None:
        return (
            f"environment {name!r} is not declared on the server: only a build of the default branch "
            f"{default!r} can declare it"
        )
    if row.declared_at is None and not on_default_branch(build):
        return (
            f"environment {name!r} is not yet declared by the default branch {default!r}: until it is, "
            "only that branch may deploy there"
        )
    of = f"this release is of {_ref(build)}"
    if not accepts_release(row, branch=build.branch, tag=build.tag, default_branch=default):
        return f"environment {name!r} takes {accepted_refs(row, default)} (its rules on the server); {of}"
    if not accepts_release(declared, branch=build.branch, tag=build.tag, default_branch=default):
        return f"its pipeline's environment {name!r} takes {accepted_refs(declared, default)}; {of}"
    if on_default_branch(build):
        return None  # the default branch declared what the server holds
    only = f"only the default branch {default!r} may change it"
    if not same_listen(row.listen, declared.listen):
        return f"environments.{name}.listen: {declared.listen} is not the server's {row.listen}; {only}"
    if row.strategy is not None and _dumped(declared.strategy) != row.strategy:
        server = Strategy.model_validate(row.strategy).kind
        differs = "its settings differ" if declared.strategy.kind == server else declared.strategy.kind
        return f"environments.{name}.strategy: {differs} from the server's {server}; {only}"
    return None


def effective(row: Environment | None, declared: Declared) -> Declared:
    """What a deployment uses: the file's environment with the server's listen, strategy and after
    (a row no default branch declared yet only ever takes default-branch releases: their own)."""
    if row is None or row.declared_at is None:
        return declared
    server: dict[str, Any] = {"listen": row.listen, "after": row.after}
    if row.strategy is not None:
        server["strategy"] = Strategy.model_validate(row.strategy)
    return declared.model_copy(update=server)


def auto_deploys(row: Environment | None, declared: Declared) -> bool:
    """Whether a release goes here by itself: the file asks (`auto`) and the server does not require a
    promote. `after` is the caller's to check."""
    return declared.auto and not (row is not None and row.require_promote)


def _dumped(strategy: Strategy) -> dict[str, Any]:
    return strategy.model_dump(mode="json", exclude_none=True)


def same_listen(a: str | None, b: str | None) -> bool:
    """One socket to nginx, whatever the spelling (rows written by older releases may hold others)."""
    if a is None or b is None:
        return a is b
    try:
        return normalize_listen(a) == normalize_listen(b)
    except ValueError:
        return a == b


def listen_conflict(session: Session, own_id: int | None, listen: str) -> str | None:
    """Which environment already serves at an address overlapping `listen`, as a message naming it."""
    serving = select(Environment).where(
        Environment.listen.is_not(None), Environment.release_id.is_not(None), Environment.id != (own_id or 0)
    )
    for other in session.scalars(serving):
        assert other.listen is not None
        if _overlap(other.listen, listen):
            project = session.get(Project, other.project_id)
            owner = project.name if project else other.project_id
            return f"listen: {listen} is already the address of environment {other.name!r} of project {owner}"
    return None


def _overlap(a: str, b: str) -> bool:
    try:
        return listens_overlap(a, b)
    except ValueError:
        return a == b


def protect(session: Session, project: Project, name: str, actor: str, **rules: Any) -> Environment:
    """Ops set an environment's rules (branches, tags, require_promote, promote_role), also before any
    push declared it; the rules not given stay as they were."""
    row = find(session, project.id, name, lock=True)
    if row is None:
        row = Environment(project_id=project.id, name=name)
        session.add(row)
    for key, value in rules.items():
        setattr(row, key, value)
    row.rules_by = actor
    session.flush()
    return row


def rules_of(row: Environment | None) -> dict[str, Any]:
    """The rules in force, as the API and the CLI show them (and the audit log records them)."""
    return {
        "branches": row.branches if row else None,
        "tags": row.tags if row else None,
        "require_promote": bool(row and row.require_promote),
        "promote_role": promote_role(row).name,
        "set_by": row.rules_by if row else None,
    }


def job_refusal(session: Session, build: Build, name: str) -> str | None:
    """Why a job of `build` may not have environment `name`'s secrets (None: it may): the rules on
    the server (none set: the default branch only) do not take its ref."""
    row = find(session, build.project_id, name)
    rules = row if row is not None else DEFAULT_BRANCH_ONLY
    default = default_branch(build)
    if accepts_release(rules, branch=build.branch, tag=build.tag, default_branch=default):
        return None
    return (
        f"environment {name!r} takes {accepted_refs(rules, default)} (its rules on the server); "
        f"a job of {_ref(build)} may not use it or its secrets"
    )
