"""What the `ciserver` command's parts share: how a refusal is printed, the project argument, and the
settings of a command that works on the data dir's database.

Such a command run from the wrong directory used to make a second, empty data dir there and report
success (a token the server then answers 401 to). So each says on stderr which data dir (or database)
it uses, and refuses to create a data dir unless asked: `ciserver --init ...`, or `up` and `serve`,
which make theirs as they start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ciserver.config import Settings, get_settings

ProjectArg = Annotated[str, typer.Argument(help="The project: OWNER/NAME (GitLab: GROUP/SUB/NAME).")]


@dataclass
class RootOptions:
    """What was given before the command (`ciserver --init token create ...`), set by the root."""

    init: bool = False
    command: str | None = None  # the command group or command after `ciserver`


ROOT = RootOptions()


def fail(message: str) -> typer.Exit:
    """`error: <message>` on stderr, in red on a terminal, and exit status 2 (raise what it returns)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=2)


def data_dir_settings() -> Settings:
    """The settings of a command that reads or writes the data dir's database, once it said which one
    on stderr; a data dir that does not exist is refused (SQLite would make a new, empty one) unless
    `--init` was given."""
    settings = get_settings()
    typer.echo(f"ciserver: {where(settings)}", err=True)
    init = ROOT.init
    problem = missing_data_dir(settings, command=f"{ROOT.command or ''} ...".lstrip(), init=init)
    if problem is not None:
        raise fail(problem)
    if init:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def where(settings: Settings) -> str:
    """`data dir /srv/ci/.ciserver (CISERVER_DATA_DIR)`, and the database when it is elsewhere."""
    origin = "CISERVER_DATA_DIR" if os.environ.get("CISERVER_DATA_DIR") else "the default, ./.ciserver"
    found = f"data dir {settings.data_dir} ({origin})"
    if settings.database_url is None:
        return found
    return f"database {_shown_url(settings.database_url)} (CISERVER_DATABASE_URL), {found}"


def missing_data_dir(settings: Settings, *, command: str, init: bool) -> str | None:
    """Why the command may not run here (None: it may): its database would be a new SQLite file in a
    data dir that does not exist yet."""
    if init or settings.database_url is not None or settings.data_dir.is_dir():
        return None
    return (
        f"the data dir {settings.data_dir} does not exist, so this is not where the server keeps its "
        "database: run the command in the directory `ciserver up` runs in, or set CISERVER_DATA_DIR "
        f"to the server's data dir; to make a new, empty one there, run `ciserver --init {command}`"
    )


def _shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"
