"""Project secrets: encrypted at rest, set and removed by ops, listed by name only, never shown."""

from __future__ import annotations

import getpass
import logging
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from ciserver import crypto
from ciserver.app import create_app
from ciserver.cli import app as cli_app
from ciserver.config import Settings
from ciserver.crypto import SecretKeyError, load_fernet
from ciserver.store.db import session_scope
from ciserver.store.models import AuditEntry, Role, Secret
from ciserver.store.projects import add_project, get_project
from ciserver.store.secrets import SecretError, list_secrets, secret_values, set_secret
from tests.support.store import bearer, fernet_of

VALUE = "s3cr3t-deploy-t0ken-VALUE"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with session_scope(settings.db_url) as session:
        add_project(
            session,
            name="octo/app",
            forge="github",
            repo_url="https://x.test/a.git",
            secret="w",
            fernet=fernet_of(session),
        )
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, outbox=False)) as client:
        yield client


def store_secret(settings: Settings, name: str, value: str = VALUE) -> bool:
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None
        return set_secret(session, project, name, value, load_fernet(settings))


def raw_database(settings: Settings) -> bytes:
    """Every byte SQLite keeps for the data dir's database, the write-ahead log included; PostgreSQL
    keeps its files elsewhere: the rows as read, there."""
    if not settings.db_url.startswith("sqlite"):
        with session_scope(settings.db_url) as session:
            return repr(session.execute(text("SELECT * FROM secrets")).all()).encode()
    files = settings.data_dir.glob("ciserver.db*")
    return b"".join(f.read_bytes() for f in files)


# -- at rest ---------------------------------------------------------------------------------------


def test_the_database_holds_only_ciphertext(settings: Settings) -> None:
    assert store_secret(settings, "DEPLOY_TOKEN") is True
    assert store_secret(settings, "DEPLOY_TOKEN", VALUE + "-rotated") is False, "a second set replaces"
    with session_scope(settings.db_url) as session:
        rows = session.execute(text("SELECT * FROM secrets")).all()
    assert len(rows) == 1
    assert not any(VALUE in str(column) for column in rows[0])
    assert VALUE.encode() not in raw_database(settings)
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None
        (secret,) = list_secrets(session, project)
        assert VALUE not in repr(secret) and VALUE not in repr(vars(secret))
        assert secret_values(session, project.id, ["DEPLOY_TOKEN"], load_fernet(settings)) == {
            "DEPLOY_TOKEN": VALUE + "-rotated"
        }


def test_a_job_gets_only_the_secrets_it_names_and_missing_ones_are_named(settings: Settings) -> None:
    store_secret(settings, "A_TOKEN")
    store_secret(settings, "OTHER", "another-value-here")
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None
        fernet = load_fernet(settings)
        assert secret_values(session, project.id, ["A_TOKEN"], fernet) == {"A_TOKEN": VALUE}
        with pytest.raises(SecretError) as missing:
            secret_values(session, project.id, ["A_TOKEN", "NOPE", "ALSO_NOPE"], fernet)
    assert "ALSO_NOPE, NOPE not set for project octo/app" in str(missing.value)


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("1ST", VALUE, "name"),
        ("WITH-DASH", VALUE, "name"),
        ("X" * 256, VALUE, "name"),
        ("SHORT", "7-chars", "value"),
        ("NUL", "abcdefgh\0ijkl", "value"),
        ("HUGE", "h" * (64 * 1024 + 1), "value"),
    ],
)
def test_refused_secrets_name_the_field_and_never_the_value(
    settings: Settings, name: str, value: str, field: str
) -> None:
    with pytest.raises(SecretError) as refused:
        store_secret(settings, name, value)
    message = str(refused.value)
    assert message.startswith(f"{field}:")
    assert value not in message and refused.value.__cause__ is None and refused.value.__context__ is None


# -- the server key ----------------------------------------------------------------------------------


def test_the_key_file_is_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    token = load_fernet(settings).encrypt(b"kept")
    key_file = settings.secret_key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_bytes()
    crypto._from_file.cache_clear()  # as a new process would
    assert load_fernet(Settings(data_dir=tmp_path)).decrypt(token) == b"kept"
    assert key_file.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"], "no temporary file is left behind"


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    code = (
        "import sys; from ciserver.config import Settings; from ciserver.crypto import load_fernet; "
        "print(load_fernet(Settings(data_dir=sys.argv[1])).encrypt(b'same').decode())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    tokens = [p.communicate(timeout=60)[0].strip() for p in procs]
    fernet = Fernet((tmp_path / "secret.key").read_bytes().strip())
    assert [fernet.decrypt(t) for t in tokens] == [b"same"] * 6


def test_a_malformed_key_setting_is_a_clear_error_without_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CISERVER_SECRET_KEY", "not-a-fernet-key")
    with pytest.raises(SecretKeyError) as bad:
        load_fernet(Settings(data_dir=tmp_path))
    assert "CISERVER_SECRET_KEY is not a valid Fernet key" in str(bad.value)
    assert "not-a-fernet-key" not in str(bad.value)
    assert not (tmp_path / "secret.key").exists(), "the setting wins: no key file is made"


def test_a_changed_key_names_the_secret_it_cannot_read(settings: Settings) -> None:
    store_secret(settings, "DEPLOY_TOKEN")
    other = settings.model_copy(update={"secret_key": Fernet.generate_key().decode()})
    with session_scope(settings.db_url) as session, pytest.raises(SecretError) as unreadable:
        project = get_project(session, "octo/app")
        assert project is not None
        secret_values(session, project.id, ["DEPLOY_TOKEN"], load_fernet(other))
    assert "DEPLOY_TOKEN cannot be decrypted" in str(unreadable.value)


# -- the API ---------------------------------------------------------------------------------------

SECRETS = "/api/v1/projects/octo/app/secrets"


def test_roles_developers_list_names_ops_set_and_remove(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    viewer, developer, ops = (bearer(settings, r) for r in (Role.viewer, Role.developer, Role.ops))
    assert client.get(SECRETS, headers=viewer).status_code == 403
    assert client.get(SECRETS, headers=developer).json() == []
    denied = client.put(f"{SECRETS}/DEPLOY_TOKEN", json={"value": VALUE}, headers=developer)
    assert denied.status_code == 403 and "ops role" in denied.json()["detail"]

    created = client.put(f"{SECRETS}/DEPLOY_TOKEN", json={"value": VALUE}, headers=ops)
    assert created.status_code == 201 and created.json()["name"] == "DEPLOY_TOKEN"
    updated = client.put(f"{SECRETS}/DEPLOY_TOKEN", json={"value": VALUE + "2"}, headers=ops)
    assert updated.status_code == 200 and updated.json()["updated_at"] >= created.json()["updated_at"]
    listed = client.get(SECRETS, headers=developer)
    assert [s["name"] for s in listed.json()] == ["DEPLOY_TOKEN"]
    assert set(listed.json()[0]) == {"name", "environment", "created_at", "updated_at"}

    assert client.delete(f"{SECRETS}/DEPLOY_TOKEN", headers=developer).status_code == 403
    assert client.delete(f"{SECRETS}/DEPLOY_TOKEN", headers=ops).status_code == 204
    gone = client.delete(f"{SECRETS}/DEPLOY_TOKEN", headers=ops)
    assert gone.status_code == 404 and "'DEPLOY_TOKEN' of project 'octo/app'" in gone.json()["detail"]
    assert client.get(SECRETS, headers=developer).json() == []

    for response in (created, updated, listed):
        assert VALUE not in response.text
    assert VALUE not in caplog.text
    with session_scope(settings.db_url) as session:
        entries = [(e.actor, e.action, e.target, e.detail) for e in session.query(AuditEntry).order_by("id")]
    target = "project:octo/app/secret:DEPLOY_TOKEN"
    assert [(a, t) for _, a, t, _ in entries] == [
        ("secret.set", target),
        ("secret.set", target),
        ("secret.delete", target),
    ]
    assert all(actor.startswith("token:") for actor, *_ in entries)
    assert VALUE not in repr(entries)


def test_bad_requests_name_the_field_and_never_echo_the_value(client: TestClient, settings: Settings) -> None:
    ops = bearer(settings, Role.ops)
    unknown = client.put("/api/v1/projects/octo/nope/secrets/KEY", json={"value": VALUE}, headers=ops)
    assert unknown.status_code == 404 and unknown.json()["detail"] == "project 'octo/nope' does not exist"
    assert client.get("/api/v1/projects/octo/nope/secrets", headers=ops).status_code == 404

    bad_name = client.put(f"{SECRETS}/NOT-A-VAR", json={"value": VALUE}, headers=ops)
    assert bad_name.status_code == 422 and bad_name.json()["detail"].startswith("name:")
    assert VALUE not in bad_name.text
    for body, field in [
        ({"value": "short"}, "value"),
        ({"value": 1234567890123}, "value"),
        ({"valeu": VALUE}, "value"),
        ({"value": VALUE, "extra": "9876543210"}, "extra"),
        ([VALUE], "body"),
    ]:
        response = client.put(f"{SECRETS}/KEY", json=body, headers=ops)
        assert response.status_code == 422, body
        detail = response.json()["detail"]
        assert isinstance(detail, str) and field in detail, detail
        for echoed in (VALUE, "short", "1234567890123", "9876543210"):
            assert echoed not in response.text
    assert client.get(SECRETS, headers=ops).json() == []


def test_secret_paths_reach_the_secrets_router_and_project_paths_still_work(
    client: TestClient, settings: Settings
) -> None:
    with session_scope(settings.db_url) as session:
        for name in ("octo/secrets", "group/sub/app"):
            add_project(
                session,
                name=name,
                forge="gitlab",
                repo_url="https://x.test/r.git",
                secret="w",
                fernet=fernet_of(session),
            )
    admin = bearer(settings, Role.admin)
    assert client.get(SECRETS, headers=admin).json() == []
    assert client.get("/api/v1/projects/octo/app", headers=admin).json()["name"] == "octo/app"
    assert client.get("/api/v1/projects/octo/secrets", headers=admin).json()["name"] == "octo/secrets"
    nested = client.put("/api/v1/projects/group/sub/app/secrets/KEY", json={"value": VALUE}, headers=admin)
    assert nested.status_code == 201
    assert client.get("/api/v1/projects/group/sub/app/secrets", headers=admin).json()[0]["name"] == "KEY"


def test_a_broken_server_key_answers_503_saying_which_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="bad-key")
    with session_scope(settings.db_url) as session:
        add_project(
            session,
            name="octo/app",
            forge="github",
            repo_url="https://x.test/a.git",
            secret="w",
            fernet=fernet_of(session),
        )
    with TestClient(create_app(settings, outbox=False)) as client:
        response = client.put(f"{SECRETS}/KEY", json={"value": VALUE}, headers=bearer(settings, Role.ops))
    assert response.status_code == 503 and "CISERVER_SECRET_KEY" in response.json()["detail"]
    assert "bad-key" not in response.text


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_sets_lists_and_removes_secrets(cli: CliRunner, settings: Settings) -> None:
    result = cli.invoke(cli_app, ["secret", "set", "octo/app", "DEPLOY_TOKEN"], input=VALUE + "\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "secret DEPLOY_TOKEN of octo/app created\n"
    result = cli.invoke(cli_app, ["secret", "set", "Octo/App", "DEPLOY_TOKEN"], input=VALUE + "-2")
    assert result.stdout == "secret DEPLOY_TOKEN of octo/app updated\n"
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None
        values = secret_values(session, project.id, ["DEPLOY_TOKEN"], load_fernet(settings))
        assert values == {"DEPLOY_TOKEN": VALUE + "-2"}, "one trailing newline is stripped, nothing else"
        audit = [(e.actor, e.action) for e in session.query(AuditEntry)]
    assert audit == [(f"cli:{getpass.getuser()}", "secret.set")] * 2

    listed = cli.invoke(cli_app, ["secret", "list", "octo/app"])
    assert listed.exit_code == 0 and listed.stdout.startswith("DEPLOY_TOKEN\tcreated ")
    assert VALUE not in listed.output

    assert cli.invoke(cli_app, ["secret", "rm", "octo/app", "DEPLOY_TOKEN"]).exit_code == 0
    again = cli.invoke(cli_app, ["secret", "rm", "octo/app", "DEPLOY_TOKEN"])
    assert again.exit_code == 2 and "'DEPLOY_TOKEN' is not set for octo/app" in again.output
    with session_scope(settings.db_url) as session:
        assert session.query(Secret).count() == 0


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["octo/app", "KEY"], "", "value: stdin was empty"),
        (["octo/app", "KEY"], "\n", "value: stdin was empty"),
        (["octo/app", "KEY"], "short\n", "value: must be at least 8 characters"),
        (["octo/app", "BAD-NAME"], VALUE, "name: 'BAD-NAME' is not an environment variable name"),
        (["octo/none", "KEY"], VALUE, "project 'octo/none' does not exist"),
    ],
)
def test_cli_refuses_with_a_clear_message(cli: CliRunner, args: list[str], stdin: str, message: str) -> None:
    result = cli.invoke(cli_app, ["secret", "set", *args], input=stdin)
    assert result.exit_code == 2
    assert message in result.output
    assert "short" not in result.output.replace(message, "")


def test_cli_keygen_prints_a_key_the_server_accepts(cli: CliRunner, tmp_path: Path) -> None:
    key = cli.invoke(cli_app, ["secret", "keygen"]).output.strip()
    assert load_fernet(Settings(data_dir=tmp_path, secret_key=key)).decrypt(Fernet(key).encrypt(b"x")) == b"x"
