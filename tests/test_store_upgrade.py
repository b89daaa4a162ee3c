"""A data dir made by an earlier release opens with this one: the new columns are added, with
their defaults for the rows already there, and the state columns read its rows as they are."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine
from sqlalchemy.exc import StatementError

from ciserver.states import Status, When
from ciserver.store.db import engine_for, session_scope
from ciserver.store.models import Base, Job, ScopedSecret
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


def test_an_older_database_gains_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    Base.metadata.create_all(create_engine(f"sqlite:///{path}"))
    with sqlite3.connect(path) as db:
        for table, columns in NEW_IN_THIS_RELEASE.items():
            for column in columns:
                db.execute(f'ALTER TABLE {table} DROP COLUMN "{column}"')
        db.execute("DROP INDEX ix_builds_project_sha")  # new in this release too
        db.execute("DROP TABLE scoped_secrets")
        db.execute(
            "INSERT INTO projects (name, forge, repo_url, secret, created_at)"
            " VALUES ('o/r', 'github', 'u', 's', '2026-01-01')"
        )
        db.execute(
            "INSERT INTO builds (project_id, ref, sha, message, author, status, created_at)"
            " VALUES (1, 'refs/heads/main', 'a', '', '', 'success', '2026-01-01')"
        )
        db.execute(
            "INSERT INTO jobs (build_id, position, name, stage, image, script, env, timeout, after, status)"
            " VALUES (1, 0, 'unit', 'test', 'i', '[]', '{}', 60, '[]', 'success')"
        )

    url = f"sqlite:///{path}"
    engine_for(url)
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
    with sqlite3.connect(path) as db:
        indexes = {row[1] for row in db.execute("PRAGMA index_list(builds)")}
    assert "ix_builds_project_sha" in indexes


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
