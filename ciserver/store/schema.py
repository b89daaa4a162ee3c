"""Which revision of the schema a database is at, and bringing it to this release's (Alembic).

A process that uses the database (API, workers, CLI) only checks: a database behind this release is
refused with the command that upgrades it, since code running on a schema it was not written for
fails later and less clearly. A new, empty database is made at the newest revision at once, so a
first start needs no step. `ciserver db upgrade` is the one place that changes an existing schema.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from ciserver.store.models import Base
from ciserver.store.upgrade import UpgradeError, add_missing_columns_and_indexes

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "ciserver db upgrade"


class SchemaOutOfDate(RuntimeError):
    """The database was made by an earlier release and must be upgraded before this one uses it."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, made here: an installed ciserver has no alembic.ini to read."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head() -> str:
    """The newest revision: the schema this release's models describe."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> str | None:
    """The database's revision; None when it has none (empty, or made before migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def open_schema(engine: Engine) -> None:
    """Make a new database at the newest revision; refuse one at an older revision, naming the command."""
    with engine.begin() as connection:
        _take_turns(connection)
        if _is_empty(connection):
            _create_at_head(connection)
            return
        at = current(connection)
    if at != head():
        made_by = f"at revision {at}" if at else "made by a release from before schema migrations"
        raise SchemaOutOfDate(
            f"the database ({engine.url.render_as_string(hide_password=True)}) is {made_by}, and this "
            f"release needs revision {head()}: stop the server and workers, back it up, and run "
            f"`{UPGRADE_COMMAND}`"
        )


def upgrade(engine: Engine) -> str:
    """Bring the database to the newest revision, whatever it is at; says what was done."""
    with engine.begin() as connection:
        _take_turns(connection)
        if _is_empty(connection):
            _create_at_head(connection)
            return f"made the tables at revision {head()}"
        at = current(connection)
        if at is None:
            return _adopt(connection)
        if at == head():
            return f"already at revision {at}"
        command.upgrade(alembic_config(connection), "head")
        return f"upgraded from revision {at} to {head()}"


def differences(connection: Connection) -> list[object]:
    """What the database lacks or has beyond the models, as Alembic's autogenerate finds it."""
    return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def _adopt(connection: Connection) -> str:
    """A database from before migrations: add the columns and indexes it lacks (all earlier releases
    only ever added some), check that it now matches the models, and record it at the newest revision."""
    Base.metadata.create_all(connection)  # tables new since its release
    added = add_missing_columns_and_indexes(connection)
    left = differences(connection)
    if left:
        raise UpgradeError(f"the database still differs from this release's schema: {left}")
    command.stamp(alembic_config(connection), "head")
    return f"adopted a database from before migrations at revision {head()}" + (
        f", adding {', '.join(added)}" if added else ""
    )


def _take_turns(connection: Connection) -> None:
    """Hold every other process's schema work off until this transaction ends: the API and the workers
    of a new deployment start together on one empty database, and only one may make the tables.
    SQLite's BEGIN IMMEDIATE (store.db) already does; PostgreSQL takes a transaction's advisory lock."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('ciserver schema'))"))


def _is_empty(connection: Connection) -> bool:
    return not inspect(connection).get_table_names()


def _create_at_head(connection: Connection) -> None:
    Base.metadata.create_all(connection)
    MigrationContext.configure(connection).stamp(ScriptDirectory.from_config(alembic_config()), "head")
