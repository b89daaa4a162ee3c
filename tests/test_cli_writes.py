"""The CLI's writes on the data dir's database (project add, token create, list and revoke): what they
refuse, what they tell the operator, and the audit entry each leaves, as the API's writes do."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ciserver.cli import app as cli_app
from ciserver.config import Settings, get_settings
from ciserver.store.db import session_scope
from ciserver.store.models import AuditEntry, Token, utcnow
from ciserver.store.projects import get_project
from ciserver.store.tokens import find_token
from tests.support.payloads import WEBHOOK_SECRET

ACTOR = f"cli:{getpass.getuser()}"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    (tmp_path / "data").mkdir()  # as `ciserver up` made it: the CLI never makes one unasked
    monkeypatch.setenv("CISERVER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CISERVER_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    yield Settings(data_dir=tmp_path / "data")
    get_settings.cache_clear()


def ciserver(*args: str) -> Result:
    return CliRunner().invoke(cli_app, list(args))


def audit(settings: Settings) -> list[tuple[str, str, str]]:
    with session_scope(settings.db_url) as session:
        return [(e.actor, e.action, e.target) for e in session.query(AuditEntry).order_by(AuditEntry.id)]


def add(name: str, secret: str = WEBHOOK_SECRET, forge: str = "github") -> Result:
    return ciserver(
        "project", "add", name, "--repo", "https://x.test/a.git", "--forge", forge, "--secret", secret
    )


def test_project_add_prints_the_projects_own_webhook_url_and_is_audited(settings: Settings) -> None:
    result = add("group/sub/app", forge="gitlab")
    assert result.exit_code == 0, result.output
    assert "/webhooks/gitlab/group/sub/app" in result.output
    assert audit(settings) == [(ACTOR, "project.create", "project:group/sub/app")]


def test_project_add_refuses_a_webhook_secret_shorter_than_16_characters(settings: Settings) -> None:
    result = add("octo/app", secret="fifteen-chars-x")
    assert result.exit_code == 2
    assert "secret: must be at least 16 characters" in result.output
    assert "fifteen-chars-x" not in result.output
    with session_scope(settings.db_url) as session:
        assert get_project(session, "octo/app") is None
    assert audit(settings) == []


def test_tokens_are_created_with_an_expiry_listed_and_revoked_and_each_write_is_audited(
    settings: Settings,
) -> None:
    created = ciserver("token", "create", "--role", "viewer", "--name", "ci bot", "--expires-in", "30d")
    assert created.exit_code == 0, created.output
    assert "expires 20" in created.output
    secret = created.stdout.strip().splitlines()[-1]
    with session_scope(settings.db_url) as session:
        token = find_token(session, secret)
        assert token is not None and token.expires_at is not None
        assert abs(token.expires_at - (utcnow() + timedelta(days=30))) < timedelta(minutes=1)
        token_id = token.id
    forever = ciserver("token", "create", "--role", "admin")
    assert forever.exit_code == 0 and "expires" not in forever.output

    listed = ciserver("token", "list")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"{token_id}\tviewer\tci bot\tcreated ") and "\texpires 20" in lines[0]
    assert lines[1].endswith("\tnever expires")
    assert secret not in listed.output

    revoked = ciserver("token", "revoke", str(token_id))
    assert revoked.exit_code == 0 and revoked.stdout == f"token {token_id} revoked\n"
    with session_scope(settings.db_url) as session:
        assert find_token(session, secret) is None
    assert "\trevoked " in ciserver("token", "list").stdout.splitlines()[0]
    unknown = ciserver("token", "revoke", "999")
    assert unknown.exit_code == 2 and "token 999 does not exist" in unknown.output

    assert audit(settings) == [
        (ACTOR, "token.create", f"token:{token_id}"),
        (ACTOR, "token.create", f"token:{token_id + 1}"),
        (ACTOR, "token.revoke", f"token:{token_id}"),
    ]


@pytest.mark.parametrize("expires_in", ["0s", "soon", "4000d"])
def test_token_create_refuses_an_expiry_that_is_not_a_lifetime(settings: Settings, expires_in: str) -> None:
    result = ciserver("token", "create", "--role", "viewer", "--expires-in", expires_in)
    assert result.exit_code == 2 and "--expires-in: " in result.output
    with session_scope(settings.db_url) as session:
        assert session.query(Token).count() == 0
