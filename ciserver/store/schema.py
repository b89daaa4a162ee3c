"""Which revision of the schema a database is at, and bringing it to this release's (Alembic).

A process that uses the database (API, workers, CLI) only checks: a database behind this release is
refused with the command that upgrades it, since code running on a schema it was not written for
fails later and less clearly. A new, empty database is made at the newest revision at once, so a
first start needs no step. `ciserver db upgrade` is the one place that changes an existing schema.

Alembic is imported only where it works (a new database, `ciserver db`): the check every process
makes reads the version table itself, since importing Alembic would add a good part of a second to
every start of a command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from ciserver.store.models import Base
from ciserver.store.upgrade import UpgradeError, add_missing_columns_and_indexes

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD = "0005"
"""The newest revision under migrations/versions: the schema the models describe (a test checks it)."""
VERSION_TABLE = "alembic_version"
UPGRADE_COMMAND = "ciserver db upgrade"


class SchemaOutOfDate(RuntimeError):
    """The database was made by an earlier release and must be upgraded before this one uses it."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, made here: an installed ciserver has no alembic.ini to read."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def current(connection: Connection) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def open_schema(engine: Engine) -> None:
    """Make a new database at the newest revision; refuse one at an older revision, naming the command."""
    with engine.begin() as connection:
        _take_turns(connection)
        if _is_empty(connection):
            _create_at_head(connection)
            return
        at = current(connection)
    if at != HEAD and at is not None and not _known(at):
        raise SchemaOutOfDate(
            f"the database is at revision {at}, which this release does not know: a newer release "
            "upgraded it, so run that release (or restore the backup taken before its upgrade)"
        )
    if at != HEAD:
        made_by = f"at revision {at}" if at else "made by a release from before schema migrations"
        raise SchemaOutOfDate(
            f"the database ({engine.url.render_as_string(hide_password=True)}) is {made_by}, and this "
            f"release needs revision {HEAD}: stop the server and workers, back it up, and run "
            f"`{UPGRADE_COMMAND}`"
        )


def upgrade(engine: Engine) -> str:
    """Bring the database to the newest revision, whatever it is at; says what was done."""
    from alembic import command

    with engine.begin() as connection:
        _take_turns(connection)
        if _is_empty(connection):
            _create_at_head(connection)
            return f"made the tables at revision {HEAD}"
        at = current(connection)
        if at is None:
            return _adopt(connection)
        if at == HEAD:
            return f"already at revision {at}"
        if not _known(at):
            raise UpgradeError(f"the database is at revision {at}, which a newer release made")
        command.upgrade(alembic_config(connection), HEAD)
        return f"upgraded from revision {at} to {HEAD}"


def differences(connection: Connection) -> list[object]:
    """What the database lacks or has beyond the models, as Alembic's autogenerate finds it."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def _adopt(connection: Connection) -> str:
    """A database from before migrations: add the columns and indexes it lacks (all earlier releases
    only ever added some), check that it now matches the models, and record it at the newest revision."""
    from alembic import command

    Base.metadata.create_all(connection)  # tables new since its release
    added = add_missing_columns_and_indexes(connection)
    # What the models no longer have (an index or column an earlier release dropped from them) is
    # left as it was, as the additive upgrade always did; anything else this release would trip on.
    left = [change for change in differences(connection) if not _is_removal(change)]
    if left:
        raise UpgradeError(f"the database still differs from this release's schema: {left}")
    command.stamp(alembic_config(connection), HEAD)
    return f"adopted a database from before migrations at revision {HEAD}" + (
        f", adding {', '.join(added)}" if added else ""
    )


def _take_turns(connection: Connection) -> None:
    """Hold every other process's schema work off until this transaction ends: the API and the workers
    of a new deployment start together on one empty database, and only one may make the tables.
    SQLite's BEGIN IMMEDIATE (store.db) already does; PostgreSQL takes a transaction's advisory lock."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('ciserver schema'))"))


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory

    return revision in {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }


def _is_removal(change: object) -> bool:
    first = change[0] if isinstance(change, list) else change  # column changes come as lists
    return isinstance(first, tuple) and str(first[0]).startswith("remove_")


def _is_empty(connection: Connection) -> bool:
    return not inspect(connection).get_table_names()


def _create_at_head(connection: Connection) -> None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    Base.metadata.create_all(connection)
    MigrationContext.configure(connection).stamp(ScriptDirectory.from_config(alembic_config()), HEAD)
