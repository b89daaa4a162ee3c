"""`ciserver project update` and `ciserver project remove`, on the data dir's database directly (as
`project add` is), each audited with the host's user as the actor.

Secrets never come from a command's arguments unless the user insists: `ps` shows them. The webhook
secret may come from CISERVER_PROJECT_SECRET (or be made: --rotate-secret), the forge token from a
file (or standard input), and a clone URL with credentials from CISERVER_PROJECT_REPO.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ciserver.cli_common import ProjectArg, data_dir_settings, fail


def project_update(
    name: ProjectArg,
    secret: Annotated[
        str | None,
        typer.Option(
            envvar="CISERVER_PROJECT_SECRET",
            show_envvar=True,
            help="A new webhook secret (at least 16 characters); set it on the forge's hook too.",
        ),
    ] = None,
    rotate_secret: Annotated[
        bool,
        typer.Option(
            "--rotate-secret",
            help="Make a new random webhook secret and print it once, alone on the last line.",
        ),
    ] = False,
    repo_url: Annotated[
        str | None,
        typer.Option(
            envvar="CISERVER_PROJECT_REPO",
            show_envvar=True,
            help="A new clone URL, checked as `project add` checks it (credentials: use the variable).",
        ),
    ] = None,
    forge_url: Annotated[
        str | None,
        typer.Option(
            help="The forge's API base URL for commit statuses: https://ghe.example/api/v3, "
            "https://gitlab.example/api/v4, https://gitea.example/api/v1 (GitHub and GitLab default "
            "to their public APIs)."
        ),
    ] = None,
    clear_forge_url: Annotated[
        bool, typer.Option("--clear-forge-url", help="Go back to the forge's public API.")
    ] = False,
    forge_token_file: Annotated[
        Path | None,
        typer.Option(
            help="A file holding the token commit statuses are set with ('-': standard input); it is "
            "kept encrypted. GitHub: statuses write; GitLab: api scope; Gitea: write:repository.",
            dir_okay=False,
            allow_dash=True,
        ),
    ] = None,
    clear_forge_token: Annotated[
        bool, typer.Option("--clear-forge-token", help="Stop reporting commit statuses.")
    ] = False,
    auto_cancel: Annotated[
        bool | None,
        typer.Option(
            "--auto-cancel/--no-auto-cancel",
            help="On a new push, cancel older unfinished builds of its branch (every branch).",
            show_default=False,
        ),
    ] = None,
    default_auto_cancel: Annotated[
        bool,
        typer.Option("--default-auto-cancel", help="Back to the default: every branch but the default one."),
    ] = False,
) -> None:
    """Change a project's webhook secret, clone URL, forge API URL and token, or auto_cancel."""
    from ciserver.clone_urls import CloneURLError, check_clone_url
    from ciserver.crypto import SecretKeyError
    from ciserver.store import audit
    from ciserver.store.db import session_scope
    from ciserver.store.key_check import open_server_key
    from ciserver.store.projects import ProjectError, get_project, update_project

    _exclusive(("--secret", secret is not None), ("--rotate-secret", rotate_secret))
    _exclusive(("--forge-url", forge_url is not None), ("--clear-forge-url", clear_forge_url))
    _exclusive(
        ("--forge-token-file", forge_token_file is not None), ("--clear-forge-token", clear_forge_token)
    )
    _exclusive(
        ("--auto-cancel/--no-auto-cancel", auto_cancel is not None),
        ("--default-auto-cancel", default_auto_cancel),
    )

    changes: dict[str, Any] = {}
    made = secrets.token_hex(32) if rotate_secret else None
    if made is not None or secret is not None:
        changes["secret"] = made or secret
    if forge_url is not None or clear_forge_url:
        changes["forge_api_url"] = forge_url
    if forge_token_file is not None:
        changes["forge_token"] = _read_token(forge_token_file)
    elif clear_forge_token:
        changes["forge_token"] = None
    if auto_cancel is not None or default_auto_cancel:
        changes["auto_cancel"] = auto_cancel
    if not changes and repo_url is None:
        raise fail("nothing to change: give at least one option (see --help)")

    settings = data_dir_settings()
    try:
        if repo_url is not None:
            changes["repo_url"] = check_clone_url(repo_url, allow_local=settings.allow_local_repos)
        fernet = open_server_key(settings)
        with session_scope(settings.db_url) as session:
            project = get_project(session, name)
            if project is None:
                raise fail(f"project {name!r} does not exist (ciserver project list)")
            changed = update_project(session, project, fernet, **changes)
            audit.record(
                session, audit.cli_actor(), "project.update", f"project:{project.name}", {"changed": changed}
            )
            typer.echo(f"project {project.name}: changed {', '.join(changed)}")
    except (CloneURLError, ProjectError, SecretKeyError) as exc:
        raise fail(str(exc)) from None
    if made is not None:
        typer.echo("the new webhook secret, shown only now (set it on the forge's hook):")
        typer.echo(made)


def project_remove(
    name: ProjectArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a project with its builds, logs, artifacts, releases, environments and secrets.

    Refused while builds are queued or running or an environment serves a release: cancel and stop
    them first. The audit log keeps its entries.
    """
    from ciserver.project_files import forget_project_files
    from ciserver.store import audit
    from ciserver.store.db import session_scope
    from ciserver.store.project_removal import ProjectBusy, remove_project
    from ciserver.store.projects import get_project

    settings = data_dir_settings()
    if not yes:
        typer.confirm(f"remove {name} and all its builds, logs, artifacts and secrets?", abort=True)
    try:
        with session_scope(settings.db_url) as session:
            project = get_project(session, name)
            if project is None:
                raise fail(f"project {name!r} does not exist (ciserver project list)")
            shown = project.name
            removed = remove_project(session, project)
            audit.record(
                session, audit.cli_actor(), "project.remove", f"project:{shown}", {"builds": removed.builds}
            )
    except ProjectBusy as exc:
        raise fail(str(exc)) from None
    forget_project_files(settings, removed)
    typer.echo(f"project {shown} removed, with {removed.builds} build(s)")


def _exclusive(*options: tuple[str, bool]) -> None:
    given = [option for option, present in options if present]
    if len(given) > 1:
        raise fail(f"{' and '.join(given)}: give one or the other")


def _read_token(path: Path) -> str:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"--forge-token-file: cannot read {path}: {exc}") from None
    token = text.strip()
    if not token:
        raise fail(f"--forge-token-file: {path} is empty")
    return token
