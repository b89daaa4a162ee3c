"""Bring an older database up to the models: add the columns a newer release defines.

create_all makes missing tables but never touches existing ones, so a data dir from an earlier
release would fail at its first query. Columns are only ever added (nullable, or with a server
default), which needs no data migration; anything else is refused with a clear message.
"""

from __future__ import annotations

from sqlalchemy import Column, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from ciserver.store.models import Base


class UpgradeError(RuntimeError):
    """The database cannot be brought up to this release by adding columns."""


def add_missing_columns(engine: Engine) -> list[str]:
    """Add every column the models have and the database lacks; returns "table.column" names."""
    added: list[str] = []
    with engine.begin() as connection:  # SQLite: BEGIN IMMEDIATE, so concurrent starts take turns
        inspector = inspect(connection)
        for table in Base.metadata.sorted_tables:
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    try:
                        connection.execute(text(_add_column(engine, table.name, column)))
                    except DBAPIError as exc:
                        raise UpgradeError(f"could not add {table.name}.{column.name}: {exc}") from None
                    added.append(f"{table.name}.{column.name}")
    return added


def _add_column(engine: Engine, table: str, column: Column) -> str:  # type: ignore[type-arg]
    preparer = engine.dialect.identifier_preparer
    kind = column.type.compile(dialect=engine.dialect)
    clause = f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(column.name)} {kind}"
    if column.nullable:
        return clause
    if column.server_default is None:
        raise UpgradeError(
            f"{table}.{column.name} is new and required, and has no default: this release cannot "
            "upgrade the database in place"
        )
    default = column.server_default.arg  # type: ignore[attr-defined]
    literal = default if isinstance(default, str) else default.compile(dialect=engine.dialect)
    return f"{clause} NOT NULL DEFAULT {literal}"
