"""The database engine and sessions: one pooled engine per process, short transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from ciserver.store.schema import open_schema


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and write-ahead locking so several processes can share it."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, open transactions (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        # A deferred transaction that reads, then writes, fails at once with SQLITE_BUSY when another
        # process wrote in between; taking the write lock up front makes it wait its turn instead.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """The process-wide engine for `url`: a new database gets its tables; an out-of-date one is refused
    (store.schema.SchemaOutOfDate, naming `ciserver db upgrade`)."""
    engine = make_engine(url)
    open_schema(engine)
    return engine


@lru_cache(maxsize=8)
def _session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session committed when the block ends, rolled back if it raises."""
    with _session_factory(url)() as session, session.begin():
        yield session
