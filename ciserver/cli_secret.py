"""`ciserver secret`: set, list and remove project secrets on the data dir's database directly.

A value is read from stdin only, never from an argument, so it stays out of shell history and `ps`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ciserver.cli_common import ProjectArg, data_dir_settings, fail

secret_app = typer.Typer(
    help="Set, list and remove project secrets (works on the data dir's database directly).",
    no_args_is_help=True,
)

KeyArg = Annotated[str, typer.Argument(help="The environment variable a job receives, e.g. DEPLOY_TOKEN.")]
ScopeOption = Annotated[
    str | None,
    typer.Option(
        "--environment",
        help="Only for this environment: its deployments, and jobs with `environment:` of refs it allows.",
    ),
]


def _target(project: str, key: str, environment: str | None) -> str:
    scope = f"/environment:{environment}" if environment else ""
    return f"project:{project}{scope}/secret:{key}"  # as the API writes it


def _named(key: str, environment: str | None) -> str:
    return f"{key} (environment {environment})" if environment else key


def _read_value() -> str:
    """The value on stdin, less one trailing newline (what `echo` or a file adds)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise fail("the value is read from stdin: pipe it in, e.g. `ciserver secret set o/app KEY < key.txt`")
    try:
        value = sys.stdin.buffer.read().decode()
    except UnicodeDecodeError:
        raise fail("value: stdin is not UTF-8 text") from None
    value = value.removesuffix("\n").removesuffix("\r") if value.endswith("\n") else value
    if not value:
        raise fail("value: stdin was empty")
    return value


@secret_app.command("set")
def secret_set(project: ProjectArg, key: KeyArg, environment: ScopeOption = None) -> None:
    """Set secret KEY of a project to the value on stdin; jobs that list KEY under `secrets` receive it
    (with --environment: only that environment's deployments and jobs, over the project's value)."""
    from ciserver.crypto import SecretKeyError
    from ciserver.store import audit
    from ciserver.store.db import session_scope
    from ciserver.store.key_check import open_server_key
    from ciserver.store.projects import get_project
    from ciserver.store.secrets import SecretError, set_secret

    value = _read_value()
    settings = data_dir_settings()
    try:
        fernet = open_server_key(settings)
        with session_scope(settings.db_url) as session:
            found = get_project(session, project)
            if found is None:
                raise fail(f"project {project!r} does not exist (see `ciserver project list`)")
            created = set_secret(session, found, key, value, fernet, environment)
            target = _target(found.name, key, environment)
            audit.record(session, audit.cli_actor(), "secret.set", target, {"created": created})
            typer.echo(
                f"secret {_named(key, environment)} of {found.name} {'created' if created else 'updated'}"
            )
    except (SecretError, SecretKeyError) as exc:
        raise fail(str(exc)) from None


@secret_app.command("list")
def secret_list(project: ProjectArg) -> None:
    """List a project's secrets: names, dates and scopes (the environment, if any), never values."""
    from ciserver.store.db import session_scope
    from ciserver.store.projects import get_project
    from ciserver.store.secrets import list_secrets

    with session_scope(data_dir_settings().db_url) as session:
        found = get_project(session, project)
        if found is None:
            raise fail(f"project {project!r} does not exist (see `ciserver project list`)")
        for secret in list_secrets(session, found):
            scope = f"\tenvironment {secret.environment}" if secret.environment else ""
            typer.echo(
                f"{secret.name}\tcreated {secret.created_at.isoformat(timespec='seconds')}"
                f"\tupdated {secret.updated_at.isoformat(timespec='seconds')}{scope}"
            )


@secret_app.command("rm")
def secret_rm(project: ProjectArg, key: KeyArg, environment: ScopeOption = None) -> None:
    """Remove secret KEY of a project (with --environment: its value for that environment only); jobs
    that still list it fail with an error naming it."""
    from ciserver.store import audit
    from ciserver.store.db import session_scope
    from ciserver.store.projects import get_project
    from ciserver.store.secrets import SecretError, delete_secret

    try:
        with session_scope(data_dir_settings().db_url) as session:
            found = get_project(session, project)
            if found is None:
                raise fail(f"project {project!r} does not exist (see `ciserver project list`)")
            if not delete_secret(session, found, key, environment):
                raise fail(f"secret {_named(key, environment)!r} is not set for {found.name}")
            audit.record(session, audit.cli_actor(), "secret.delete", _target(found.name, key, environment))
            typer.echo(f"secret {_named(key, environment)} of {found.name} removed")
    except SecretError as exc:
        raise fail(str(exc)) from None


@secret_app.command("keygen")
def secret_keygen() -> None:
    """Print a new Fernet key for CISERVER_SECRET_KEY (set it on every process, and keep a copy)."""
    from ciserver.crypto import new_key

    typer.echo(new_key())
