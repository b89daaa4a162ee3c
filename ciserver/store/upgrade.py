"""Bring a database from before schema migrations up to the models: add the columns it lacks.

Releases before Alembic (see store.schema) made their tables with create_all and added columns at
start, so their databases have no revision: `ciserver db upgrade` adopts them with this. Columns
were only ever added (nullable, or with a server default), which needs no data migration, and so
were indexes; anything else is refused with a clear message.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from ciserver.store.models import Base


class UpgradeError(RuntimeError):
    """The database cannot be brought up to this release by adding columns."""


def add_missing_columns_and_indexes(connection: Connection) -> list[str]:
    """Add every column and index the models have and the database lacks; returns "table.name" names."""
    added: list[str] = []
    inspector = inspect(connection)
    for table in Base.metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                try:
                    connection.execute(text(_add_column(connection, table.name, column)))
                except DBAPIError as exc:
                    raise UpgradeError(f"could not add {table.name}.{column.name}: {exc}") from None
                added.append(f"{table.name}.{column.name}")
        present_indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present_indexes:
                index.create(connection)
                added.append(f"{table.name}.{index.name}")
    return added


def _add_column(bind: Engine | Connection, table: str, column: Column) -> str:  # type: ignore[type-arg]
    dialect = bind.dialect
    preparer = dialect.identifier_preparer
    kind = column.type.compile(dialect=dialect)
    clause = f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(column.name)} {kind}"
    if column.nullable:
        return clause
    if column.server_default is None:
        raise UpgradeError(
            f"{table}.{column.name} is new and required, and has no default: this release cannot "
            "upgrade the database in place"
        )
    default = column.server_default.arg  # type: ignore[attr-defined]
    literal = default if isinstance(default, str) else default.compile(dialect=dialect)
    return f"{clause} NOT NULL DEFAULT {literal}"
