"""Credentials in a clone URL: kept encrypted apart from the URL, shown as `***`, and given to git
through a credential helper reading its environment, never in a process's arguments."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from ciserver.app import create_app
from ciserver.cli import app as cli_app
from ciserver.clone_urls import CloneURLError, Remote
from ciserver.config import Settings, get_settings
from ciserver.store.clone_credentials import clone_remote
from ciserver.store.db import session_scope
from ciserver.store.key_check import open_server_key
from ciserver.store.models import Project, Role
from tests.support.store import bearer

WEBHOOK_SECRET = "a-webhook-secret-of-some-length"


def raw_files(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_url_is_split_from_its_credentials_which_are_decoded() -> None:
    remote = Remote.parse("https://ci-bot:p%40ss%3Aword@git.example.com:8443/o/r.git")
    assert (remote.url, remote.username, remote.password) == (
        "https://git.example.com:8443/o/r.git",
        "ci-bot",
        "p@ss:word",
    )
    assert remote.shown == "https://***@git.example.com:8443/o/r.git"
    token_only = Remote.parse("https://ghp_token@github.com/o/r.git")
    assert (token_only.url, token_only.username, token_only.password) == (
        "https://github.com/o/r.git",
        "ghp_token",
        None,
    )
    for plain in (
        "https://github.com/o/r.git",
        "ssh://git@host/o/r.git",
        "git@github.com:o/r.git",
        "/srv/r.git",
    ):
        assert Remote.parse(plain) == Remote(plain) and Remote(plain).shown == plain
    with pytest.raises(CloneURLError, match="repo: credentials"):
        Remote.parse("https://bot:a%0Ab@github.com/o/r.git")  # a newline would add a line for git


def test_registered_credentials_are_stored_encrypted_and_answers_show_stars(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    password = f"p@ss-{uuid.uuid4().hex}"
    url = f"https://ci-bot:{password.replace('@', '%40')}@git.example.com/o/r.git"
    with TestClient(create_app(settings, outbox=False)) as client:
        headers = bearer(settings, Role.admin)
        body = {"name": "octo/app", "forge": "github", "repo": url, "secret": WEBHOOK_SECRET}
        response = client.post("/api/v1/projects", json=body, headers=headers)
        assert response.status_code == 201, response.text
        assert response.json()["repo"] == "https://***@git.example.com/o/r.git"
        assert (
            client.get("/api/v1/projects/octo/app", headers=headers).json()["repo"].startswith("https://***@")
        )
    assert password.split("-")[1].encode() not in raw_files(settings.data_dir)
    with session_scope(settings.db_url) as session:
        project = session.scalars(select(Project)).one()
        assert project.repo_url == "https://git.example.com/o/r.git"
        remote = clone_remote(project.repo_url, project.repo_credentials, settings)
    assert (remote.username, remote.password) == ("ci-bot", password)


def test_urls_an_earlier_release_stored_with_credentials_are_converted_before_the_server_starts(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with TestClient(create_app(settings, outbox=False)):
        pass  # the tables
    with session_scope(settings.db_url) as session:  # rows as an earlier release wrote them
        session.add(
            Project(name="octo/old", forge="github", repo_url="https://bot:tok3n-x@h.test/o.git", secret="s")
        )
        session.add(Project(name="octo/plain", forge="github", repo_url="https://h.test/p.git", secret="s"))
    open_server_key(settings)  # what `serve`, `worker` and `up` do before they start
    assert b"tok3n-x" not in raw_files(settings.data_dir)
    with session_scope(settings.db_url) as session:
        rows = {p.name: (p.repo_url, p.repo_credentials) for p in session.scalars(select(Project))}
    assert rows["octo/old"][0] == "https://h.test/o.git" and rows["octo/old"][1] is not None
    assert rows["octo/plain"] == ("https://h.test/p.git", None)
    remote = clone_remote(*rows["octo/old"], settings)
    assert (remote.url, remote.username, remote.password) == ("https://h.test/o.git", "bot", "tok3n-x")


def test_the_cli_takes_a_url_with_credentials_from_the_environment_and_lists_it_with_stars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()  # the server's data dir
    monkeypatch.setenv("CISERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CISERVER_PROJECT_REPO", "https://bot:tok3n-y@h.test/o.git")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        args = ["project", "add", "octo/env", "--forge", "github", "--secret", WEBHOOK_SECRET]
        result = runner.invoke(cli_app, args)
        assert result.exit_code == 0, result.output
        listed = runner.invoke(cli_app, ["project", "list"]).stdout
    finally:
        get_settings.cache_clear()
    assert listed == "octo/env\tgithub\thttps://***@h.test/o.git\n"
    assert b"tok3n-y" not in raw_files(tmp_path / "data")
