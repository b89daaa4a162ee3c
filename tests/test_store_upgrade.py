"""A data dir made by an earlier release: the server refuses it until `ciserver db upgrade` has run,
which adds the new columns with their defaults for the rows already there; the migrations and the
models agree; and the state columns read an earlier release's rows as they are."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, text
from sqlalchemy.exc import StatementError
from typer.testing import CliRunner

from ciserver.app import create_app
from ciserver.cli import app as cli_app
from ciserver.config import Settings
from ciserver.states import Status, When
from ciserver.store.db import engine_for, make_engine, session_scope
from ciserver.store.models import Base, Job, ScopedSecret
from ciserver.store.schema import HEAD, SchemaOutOfDate, alembic_config, current, differences
from ciserver.store.upgrade import UpgradeError, _add_column

NEW_IN_THIS_RELEASE = {
    "projects": ["auto_cancel"],
    "builds": ["default_branch"],
    "jobs": ["when", "allow_failure", "options", "attempt", "dispatched_at", "image_tag", "image_id"],
    "releases": ["refused"],
    "environments": [
        "strategy",
        "after",
        "declared_at",
        "declared_by",
        "branches",
        "tags",
        "require_promote",
        "promote_role",
        "rules_by",
    ],
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The data dir's settings; its database URL is the one to parametrize for other databases."""
    return Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'ciserver.db'}")


def make_previous_release_database(url: str) -> None:
    """The tables as the release before migrations left them: without the columns, index and table
    added since, with no alembic_version, and with a build and its job in them."""
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as db:
        for table, columns in NEW_IN_THIS_RELEASE.items():
            for column in columns:
                db.execute(text(f'ALTER TABLE {table} DROP COLUMN "{column}"'))
        db.execute(text("DROP INDEX ix_builds_project_sha"))
        db.execute(text("DROP TABLE scoped_secrets"))
        db.execute(
            text(
                "INSERT INTO projects (name, forge, repo_url, secret, created_at)"
                " VALUES ('o/r', 'github', 'u', 's', '2026-01-01')"
            )
        )
        db.execute(
            text(
                "INSERT INTO builds (project_id, ref, sha, message, author, status, created_at)"
                " VALUES (1, 'refs/heads/main', 'a', '', '', 'success', '2026-01-01')"
            )
        )
        db.execute(
            text(
                "INSERT INTO jobs (build_id, position, name, stage, image, script, env, timeout, after,"
                " status) VALUES (1, 0, 'unit', 'test', 'i', '[]', '{}', 60, '[]', 'success')"
            )
        )
    engine.dispose()


def test_a_previous_release_database_is_refused_until_db_upgrade_then_keeps_its_rows(
    settings: Settings, cli: CliRunner
) -> None:
    url = settings.db_url
    make_previous_release_database(url)
    with pytest.raises(SchemaOutOfDate, match="run `ciserver db upgrade`"):
        engine_for(url)

    result = cli.invoke(cli_app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"adopted a database from before migrations at revision {HEAD}" in result.output
    assert "builds.ix_builds_project_sha" in result.output

    with session_scope(url) as session:
        job = session.get(Job, 1)
        assert job is not None
        assert (job.name, job.when, job.allow_failure, job.options, job.attempt) == (
            "unit",
            "on_success",
            False,
            {},
            1,
        )
        assert job.build.project.auto_cancel is None
        assert session.query(ScopedSecret).count() == 0  # its table made
    with engine_for(url).connect() as connection:
        assert current(connection) == HEAD
        assert differences(connection) == []


def test_the_server_refuses_an_out_of_date_database_naming_the_command_and_starts_after_it(
    settings: Settings, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_previous_release_database(settings.db_url)
    monkeypatch.setenv("CISERVER_REDIS_URL", "redis://127.0.0.1:1")  # refused before it is used
    for command_line in (["serve"], ["worker", "--burst"], ["up"]):
        refused = cli.invoke(cli_app, command_line)
        assert refused.exit_code == 2, refused.output
        assert "release from before schema migrations" in refused.output
        assert "run `ciserver db upgrade`" in refused.output
    with pytest.raises(SchemaOutOfDate), TestClient(create_app(settings, outbox=False)):
        pass

    assert cli.invoke(cli_app, ["db", "upgrade"]).exit_code == 0
    with TestClient(create_app(settings, outbox=False)) as client:
        assert client.get("/healthz").status_code == 200


def test_every_command_that_opens_the_database_refuses_it_in_one_line(settings: Settings) -> None:
    make_previous_release_database(settings.db_url)
    env = {"PATH": "/usr/bin:/bin", "CISERVER_DATA_DIR": str(settings.data_dir)}
    for command_line in (["token", "create", "--role", "admin"], ["project", "list"]):
        refused = subprocess.run(
            [sys.executable, "-m", "ciserver", *command_line], env=env, capture_output=True, text=True
        )
        assert refused.returncode == 2, refused.stderr
        last = refused.stderr.splitlines()[-1]  # after the line naming the data dir
        assert last.startswith("error: ") and "run `ciserver db upgrade`" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_db_upgrade_twice_is_harmless_and_db_current_says_where_it_is(
    settings: Settings, cli: CliRunner
) -> None:
    make_previous_release_database(settings.db_url)
    assert "run `ciserver db upgrade`" in cli.invoke(cli_app, ["db", "current"]).output
    assert cli.invoke(cli_app, ["db", "upgrade"]).exit_code == 0
    again = cli.invoke(cli_app, ["db", "upgrade"])
    assert again.exit_code == 0, again.output
    assert again.stdout == f"already at revision {HEAD}\n"
    assert cli.invoke(cli_app, ["db", "current"]).stdout == f"database: {HEAD}\nthis release: {HEAD}\n"
    with session_scope(settings.db_url) as session:
        assert session.get(Job, 1) is not None


def test_a_database_a_newer_release_upgraded_is_refused_saying_so(settings: Settings, cli: CliRunner) -> None:
    engine_for(settings.db_url)
    with session_scope(settings.db_url) as session:
        session.execute(text("UPDATE alembic_version SET version_num = 'fffffff'"))
    engine_for.cache_clear()
    with pytest.raises(SchemaOutOfDate, match="revision fffffff, which this release does not know"):
        engine_for(settings.db_url)
    refused = cli.invoke(cli_app, ["db", "upgrade"])
    assert refused.exit_code == 2
    assert "revision fffffff, which a newer release made" in refused.output


def test_an_index_the_models_no_longer_have_does_not_stop_the_adoption(
    settings: Settings, cli: CliRunner
) -> None:
    make_previous_release_database(settings.db_url)
    with make_engine(settings.db_url).begin() as db:
        db.execute(text("CREATE INDEX ix_builds_dropped_since ON builds (ref)"))
    assert cli.invoke(cli_app, ["db", "upgrade"]).exit_code == 0
    engine_for(settings.db_url)  # not refused


def test_db_upgrade_makes_a_new_database_at_the_newest_revision(settings: Settings, cli: CliRunner) -> None:
    result = cli.invoke(cli_app, ["db", "upgrade"])
    assert result.stdout == f"made the tables at revision {HEAD}\n"
    engine_for(settings.db_url)  # not refused


def test_the_migrations_make_the_schema_the_models_describe(settings: Settings) -> None:
    """A model changed without a migration fails here: run the migrations on an empty database and
    compare with autogenerate."""
    engine = make_engine(settings.db_url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "head")
        assert current(connection) == HEAD
        assert differences(connection) == []
    engine.dispose()


def test_the_newest_revision_is_the_one_the_check_expects() -> None:
    """store.schema names the head itself, so that starting a process need not import Alembic."""
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


def test_a_new_database_is_made_at_the_newest_revision(settings: Settings) -> None:
    with engine_for(settings.db_url).connect() as connection:
        assert current(connection) == HEAD
        assert differences(connection) == []


def test_a_new_required_column_without_a_default_is_refused_with_a_clear_message() -> None:
    table = Table(
        "t", MetaData(), Column("id", Integer, primary_key=True), Column("must", String, nullable=False)
    )
    with pytest.raises(UpgradeError, match=r"t\.must is new and required"):
        _add_column(create_engine("sqlite://"), "t", table.c.must)


def test_state_columns_keep_their_values_as_text_and_read_them_back_as_enums(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    url = f"sqlite:///{path}"
    engine_for(url)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO projects (name, forge, repo_url, secret, created_at)"
            " VALUES ('o/r', 'github', 'u', 's', '2026-01-01')"
        )
        db.execute(
            "INSERT INTO builds (project_id, ref, sha, message, author, status, created_at)"
            " VALUES (1, 'refs/heads/main', 'a', '', '', 'running', '2026-01-01')"
        )
        db.execute(
            "INSERT INTO jobs (build_id, position, name, stage, image, script, env, timeout, after, status,"
            " \"when\") VALUES (1, 0, 'deploy', 'test', 'i', '[]', '{}', 60, '[]', 'skipped', 'manual')"
        )
        columns = {row[1]: row[2] for row in db.execute("PRAGMA table_info(jobs)")}
        tables = [sql for (sql,) in db.execute("SELECT sql FROM sqlite_master WHERE type = 'table'")]
    assert columns["status"] == columns["when"] == "VARCHAR(16)"
    assert not any("CHECK" in sql for sql in tables)  # no row an earlier release wrote can break one

    with session_scope(url) as session:
        job = session.get(Job, 1)
        assert job is not None
        assert (job.status, job.when, job.build.status) == (Status.skipped, When.manual, Status.running)
        assert isinstance(job.when, When)
    refused = pytest.raises(StatementError, match="'later' is not among the defined enum values")
    with refused, session_scope(url) as session:
        session.get(Job, 1).when = "later"  # type: ignore[union-attr,assignment]


def test_processes_starting_together_on_a_new_database_all_start(settings: Settings) -> None:
    """The API and the workers of a new deployment start at once: one makes the tables, none fails."""
    start = f"from ciserver.store.db import engine_for; engine_for({settings.db_url!r})"
    starts = [
        subprocess.Popen([sys.executable, "-c", start], stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    assert [(process.wait(60), process.stderr.read()) for process in starts] == [(0, "")] * 3  # type: ignore[union-attr]
    with engine_for(settings.db_url).connect() as connection:
        assert current(connection) == HEAD
