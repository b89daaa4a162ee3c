"""Alembic's environment: always online, on the connection `ciserver.store.schema` hands over."""

from __future__ import annotations

from alembic import context

from ciserver.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
