"""`ciserver environment`: protect, list and stop a project's environments on the data dir's database
directly.

The rules set here are the server's: which refs may deploy, whether a promote is required and who may
give it. Each change is written to the audit log as `cli:<os user>`, as an API write is by its token.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from ciserver.cli_common import ProjectArg, data_dir_settings, fail

environment_app = typer.Typer(
    help="Protect, list and stop a project's environments (works on the data dir's database directly).",
    no_args_is_help=True,
)


class PromoteRole(StrEnum):
    developer = "developer"
    ops = "ops"
    admin = "admin"


@environment_app.command("protect")
def protect(
    project: ProjectArg,
    environment: Annotated[str, typer.Argument(help="The environment, e.g. production.")],
    branch: Annotated[
        list[str] | None, typer.Option("--branch", help="A branch glob that may deploy (repeat it).")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="A tag glob that may deploy (repeat it).")
    ] = None,
    default_branch_only: Annotated[
        bool, typer.Option("--default-branch-only", help="Only the default branch may deploy.")
    ] = False,
    require_promote: Annotated[
        bool | None,
        typer.Option(
            "--require-promote/--no-require-promote",
            help="Whether every release needs a promote (no automatic deployment).",
            show_default=False,
        ),
    ] = None,
    promote_role: Annotated[
        PromoteRole | None,
        typer.Option(help="The least role that may promote, roll back, pause, resume and abort here."),
    ] = None,
) -> None:
    """Set an environment's rules, also before any push declares it. Rules not given stay as they are;
    --branch/--tag replace the refs allowed (none ever set: the default branch only)."""
    from pydantic import TypeAdapter, ValidationError

    from ciserver.pipeline.environments import ENVIRONMENT_NAME
    from ciserver.pipeline.fields import Patterns
    from ciserver.store import audit
    from ciserver.store.db import session_scope
    from ciserver.store.environments import protect as store_protect
    from ciserver.store.environments import rules_of
    from ciserver.store.projects import get_project

    if not ENVIRONMENT_NAME.fullmatch(environment):
        raise fail(f"environment: {environment!r} is not an environment name (lowercase, digits, '-', '_')")
    if default_branch_only and (branch or tag):
        raise fail("--default-branch-only and --branch/--tag contradict each other: give one")
    rules: dict[str, Any] = {}
    if branch or tag or default_branch_only:
        for option, globs in (("branch", branch), ("tag", tag)):
            try:
                TypeAdapter(Patterns).validate_python(globs or [])
            except ValidationError as exc:
                raise fail(f"--{option}: {exc.errors()[0]['msg']}") from None
        rules.update(branches=branch or None, tags=tag or None)
    if require_promote is not None:
        rules["require_promote"] = require_promote
    if promote_role is not None:
        rules["promote_role"] = promote_role.value
    actor = audit.cli_actor()
    with session_scope(data_dir_settings().db_url) as session:
        found = get_project(session, project)
        if found is None:
            raise fail(f"project {project!r} does not exist (see `ciserver project list`)")
        row = store_protect(session, found, environment, actor, **rules)
        now = rules_of(row)
        audit.record(
            session, actor, "environment.protect", f"project:{found.name}/environment:{environment}", now
        )
        typer.echo(f"environment {environment} of {found.name} protected: {_describe(now)}")


@environment_app.command("list")
def environment_list(project: ProjectArg) -> None:
    """List a project's environments: where each listens, how it deploys, its rules and its release."""
    from ciserver.store.db import session_scope
    from ciserver.store.deployments import list_environments, stop_of
    from ciserver.store.environments import rules_of
    from ciserver.store.projects import get_project

    with session_scope(data_dir_settings().db_url) as session:
        found = get_project(session, project)
        if found is None:
            raise fail(f"project {project!r} does not exist (see `ciserver project list`)")
        for row, _latest in list_environments(session, found.id):
            strategy = next(iter(row.strategy or {}), "-")
            stop = stop_of(session, row)
            release = (
                f"build {row.release.build_id} ({row.release.sha[:12]})"
                if row.release
                else f"nothing: stopped by {stop.triggered_by} at {stop.finished_at:%Y-%m-%d %H:%M:%S}"
                if stop is not None and stop.finished_at is not None
                else "nothing yet"
            )
            rules = _describe(rules_of(row))
            typer.echo(f"{row.name}\tlisten {row.listen or '-'}\t{strategy}\t{rules}\truns {release}")


def _describe(rules: dict[str, Any]) -> str:
    """refs branches [main, release/*]; promote required, by ops or above"""
    refs = []
    if rules["branches"] is not None:
        refs.append(f"branches [{', '.join(rules['branches'])}]")
    if rules["tags"] is not None:
        refs.append(f"tags [{', '.join(rules['tags'])}]")
    promote = "promote required" if rules["require_promote"] else "auto allowed"
    return (
        f"refs {' and '.join(refs) or 'the default branch'}; {promote}, by {rules['promote_role']} or above"
    )


@environment_app.command("stop")
def stop(
    project: ProjectArg,
    environment: Annotated[str, typer.Argument(help="The environment, e.g. staging.")],
) -> None:
    """Take an environment down: a deploy worker removes its containers and its nginx route, so nothing
    serves it until a promote or an automatic deployment starts it again. Deployed services outlive
    `ciserver up`: this is how they stop."""
    from redis.exceptions import RedisError

    from ciserver import queue
    from ciserver.store import audit
    from ciserver.store.db import session_scope
    from ciserver.store.deployments import DeployRefused
    from ciserver.store.projects import get_project
    from ciserver.store.releases import stop as store_stop

    settings = data_dir_settings()
    actor = audit.cli_actor()
    try:
        with session_scope(settings.db_url) as session:
            found = get_project(session, project)
            if found is None:
                raise fail(f"project {project!r} does not exist (see `ciserver project list`)")
            deployment = store_stop(session, found, environment, actor)
            target = f"project:{found.name}/environment:{environment}"
            audit.record(session, actor, "environment.stop", target, {"deployment_id": deployment.id})
            stop_id, name = deployment.id, found.name
    except DeployRefused as exc:
        raise fail(exc.message) from None
    if settings.redis_url:
        try:
            queue.enqueue_deployments(queue.connect(settings.redis_url), [stop_id])
        except RedisError:
            pass  # recorded: the API's outbox hands it to a deploy worker
    typer.echo(
        f"environment {environment} of {name}: stop recorded as deployment {stop_id}; a deploy worker "
        f"removes its containers and route (see GET /api/v1/deployments/{stop_id})"
    )
