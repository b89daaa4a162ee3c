"""Fixtures shared by the fast and the end-to-end tests: a real redis-server and a real PostgreSQL for the
whole run, and a database of each kind for the store's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from ciserver.config import Settings, get_settings
from ciserver.store.db import session_scope
from tests.support.postgres import PostgresServer
from tests.support.services import RedisServer
from tests.support.store import DATA_DIRS


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the whole run."""
    redis = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield redis.url
    finally:
        redis.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the whole run, started only if a test asks for it."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer, tmp_path: Path) -> Iterator[str]:
    """A new, empty PostgreSQL database whose data dir (for its key file) is the test's `data`."""
    url = postgres.new_database()
    DATA_DIRS[make_url(url).database or ""] = tmp_path / "data"
    try:
        yield url
    finally:
        postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of each kind the server supports, in or for the data dir `tmp_path/data`:
    the store's tests run on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'ciserver.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    """A session on a new database of each kind, committed when the test ends."""
    with session_scope(database_url) as session:
        yield session


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """The `ciserver` command run in-process on the test's own `settings` (its data dir and database,
    and no server key from the environment)."""
    monkeypatch.setenv("CISERVER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CISERVER_DATABASE_URL", settings.db_url)
    monkeypatch.delenv("CISERVER_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()
