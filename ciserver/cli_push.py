"""`ciserver push`: start a build without a forge, by sending the push webhook the project's forge
would send, signed with the project's secret.

The secret and the repository are read from the data dir's database (as `ciserver project add` writes
them), so it runs on the server's host, where the data dir is; it never creates a data dir or a key.
The webhook goes to CISERVER_URL like any forge's, so the server records and builds it as a real push.
"""

from __future__ import annotations

import getpass
import re
from pathlib import Path
from typing import Annotated

import typer

from ciserver.cli_client import DEFAULT_URL, PANEL, Token, Url, connected
from ciserver.cli_common import ProjectArg, fail, where
from ciserver.config import Settings, get_settings
from ciserver.push_webhook import PushError, default_branch_of, resolve, signed_push
from ciserver.states import Status

SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")


def push(
    project: ProjectArg,
    ref: Annotated[str, typer.Option(help="The branch or tag pushed: main, v1.0, or a full refs/... name.")],
    sha: Annotated[
        str | None,
        typer.Option(help="The commit (full sha); default: what --ref points at in the repository."),
    ] = None,
    repo: Annotated[
        Path | None,
        typer.Option(
            help="A local clone to read the commit from; default: the project's repository when it is a "
            "local path.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
    default_branch: Annotated[
        str | None,
        typer.Option(help="The repository's default branch; default: what the repository tells, else main."),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Then follow the build until it ends.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Send a signed push webhook for a registered project, as its forge would, and print the build's id.

    Reads the project's webhook secret and repository from the data dir's database (CISERVER_DATA_DIR
    or CISERVER_DATABASE_URL), so run it on the server's host. The commit comes from --sha, or from
    --ref resolved with git in the project's repository (a local path) or in --repo. With --watch, the
    exit status is 0 only if the build succeeded (needs CISERVER_TOKEN).
    """
    if sha is not None and not SHA.fullmatch(sha):
        raise fail("--sha: must be a full commit sha (40 or 64 hex digits)")
    if watch and not token:
        raise fail("--watch: needs an API token to read the build: set CISERVER_TOKEN or pass --token")
    settings = get_settings()
    forge, secret, local = _project(settings, project)
    source = repo or local
    try:
        commit = resolve(source, ref, sha.lower() if sha else None)
        branch = default_branch or (default_branch_of(source) if source is not None else None)
        body, headers = signed_push(forge, project, secret, branch, commit, _pusher())
    except PushError as exc:
        raise fail(str(exc)) from None
    from ciserver.client import path_of
    from ciserver.client_render import console
    from ciserver.client_text import field
    from ciserver.client_watch import watch_build

    with connected(url, token) as client:
        answer = client.post_webhook(f"/webhooks/{forge}/{path_of(project)}", body, headers)
        try:
            said = answer.json()
        except ValueError:
            said = {}
        message = field(said.get("message") or said.get("detail") or answer.text, 300)
        build_id = said.get("build_id")
        if answer.status_code >= 400 or build_id is None:
            raise fail(f"the server did not build the push ({answer.status_code}): {message}")
        what = "queued" if answer.status_code == 202 else f"already recorded ({message})"
        typer.echo(f"build {build_id} {what}: {project} {commit.ref} {commit.sha[:12]}")
        if not watch:
            typer.echo(f"follow it with: ciserver watch {build_id}")
            return
        status = watch_build(client, int(build_id), console(), as_json=False)
    if status != Status.success.value:
        raise typer.Exit(1)


def _project(settings: Settings, name: str) -> tuple[str, str, Path | None]:
    """The project's forge, webhook secret and local repository (None if it is not a local path),
    from the database, which must already exist: this command creates no data dir and no key."""
    from ciserver.crypto import SecretKeyError, load_fernet
    from ciserver.store.db import session_scope
    from ciserver.store.projects import get_project, webhook_secret

    database = settings.data_dir / "ciserver.db"
    if settings.database_url is None and not database.exists():
        raise fail(
            f"no ciserver database at {database}: run this where the server keeps its data dir, or set "
            "CISERVER_DATA_DIR (or CISERVER_DATABASE_URL) to the server's; nothing was created"
        )
    if settings.secret_key is None and not settings.secret_key_file.exists():
        raise fail(
            f"no server key: {settings.secret_key_file} is missing and CISERVER_SECRET_KEY is not set "
            "(set it to the server's key); nothing was created"
        )
    typer.echo(f"ciserver: reading the project from the {where(settings)}", err=True)
    try:
        fernet = load_fernet(settings)
        with session_scope(settings.db_url) as session:
            found = get_project(session, name)
            if found is None:
                raise fail(f"project {name!r} is not registered (see `ciserver project list`)")
            return found.forge, webhook_secret(found, fernet), _local_path(found.repo_url)
    except SecretKeyError as exc:
        raise fail(str(exc)) from None


def _pusher() -> str:
    """Who pushed, as the build shows it: this host's user (a container may have no name for it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "ciserver push"


def _local_path(repo_url: str) -> Path | None:
    """The repository as a directory on this host, if its clone URL is a local path or file:// URL."""
    path = repo_url.removeprefix("file://") if repo_url.startswith("file://") else repo_url
    if "://" in path or not path.startswith("/"):
        return None
    return Path(path) if Path(path).is_dir() else None


def register(app: typer.Typer) -> None:
    """Add `push` to the `ciserver` command."""
    app.command(rich_help_panel=PANEL)(push)
