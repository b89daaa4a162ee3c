"""`ciserver db`: bring the database's schema up to this release, and say which revision it is at.

Works on the settings' database (CISERVER_DATABASE_URL, or the data dir's SQLite file) directly; the
server and workers refuse an out-of-date schema until `ciserver db upgrade` has run.
"""

from __future__ import annotations

import typer

from ciserver.cli_common import data_dir_settings, fail

db_app = typer.Typer(help="Upgrade the database's schema (run after installing a new release).")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database to this release's schema; a database already there is left as it is.

    Stop the server and workers and back the database up first. A database from before schema
    migrations is adopted: the columns and indexes it lacks are added, then it is recorded at the
    newest revision.
    """
    from ciserver.store.db import make_engine
    from ciserver.store.schema import upgrade
    from ciserver.store.upgrade import UpgradeError

    engine = make_engine(data_dir_settings().db_url)
    try:
        typer.echo(upgrade(engine))
    except UpgradeError as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()


@db_app.command("current")
def db_current() -> None:
    """The database's revision and this release's, and whether `ciserver db upgrade` is needed."""
    from ciserver.store.db import make_engine
    from ciserver.store.schema import HEAD, current

    engine = make_engine(data_dir_settings().db_url)
    try:
        with engine.connect() as connection:
            at = current(connection)
    finally:
        engine.dispose()
    typer.echo(f"database: {at or 'none'}\nthis release: {HEAD}")
    if at != HEAD:
        typer.echo("run `ciserver db upgrade`")
