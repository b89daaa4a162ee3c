"""Environment rules over the API and the CLI, in process on a real SQLite database: ops set them (audited),
422 names the field, the promote role governs promote, rollback, pause, resume and abort, and scoped
secrets are set, listed and removed by scope."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ciserver.app import create_app
from ciserver.cli import app as cli_app
from ciserver.config import Settings
from ciserver.store import deployments as store
from ciserver.store import releases
from ciserver.store.db import session_scope
from ciserver.store.models import AuditEntry, Role
from ciserver.store.projects import add_project, get_project
from tests.support.store import bearer, fernet_of
from tests.test_deployment_store import green

BASE = "/api/v1/projects/octo/app"
PROTECTION = f"{BASE}/environments/production/protection"
VALUE = "a-production-secret-value"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with session_scope(settings.db_url) as session:
        add_project(
            session,
            name="octo/app",
            forge="github",
            repo_url="https://x.test/r",
            secret="s",
            fernet=fernet_of(session),
        )
    return settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, outbox=False)) as client:
        yield client


@pytest.fixture
def build_id(settings: Settings) -> int:
    """A green build of main whose release staging deployed; production (after staging) waits."""
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None
        build_id = green(session, project)
        [staging] = releases.deployments_for_green_build(session, build_id)
        store.claim(session, staging, "worker")
        store.finish(session, staging, store.DeploymentStatus.succeeded)
    return build_id


def audits(settings: Settings, action: str) -> list[AuditEntry]:
    with session_scope(settings.db_url) as session:
        return list(session.query(AuditEntry).filter(AuditEntry.action == action).order_by(AuditEntry.id))


def test_ops_set_rules_before_any_push_and_only_what_they_give_changes(
    client: TestClient, settings: Settings
) -> None:
    viewer, ops = bearer(settings, Role.viewer), bearer(settings, Role.ops)
    assert client.get(PROTECTION, headers=viewer).json() == {
        "branches": None,
        "tags": None,
        "require_promote": False,
        "promote_role": "ops",
        "set_by": None,
    }
    assert client.put(PROTECTION, json={"require_promote": True}, headers=viewer).status_code == 403
    first = client.put(PROTECTION, json={"tags": ["v*"], "promote_role": "admin"}, headers=ops)
    assert first.status_code == 200, first.text
    assert first.json()["branches"] is None and first.json()["tags"] == ["v*"]
    second = client.put(PROTECTION, json={"require_promote": True}, headers=ops).json()
    assert (second["tags"], second["promote_role"], second["require_promote"]) == (["v*"], "admin", True)
    assert second["set_by"].startswith("token:")
    [listed] = client.get(f"{BASE}/environments", headers=viewer).json()
    assert listed["name"] == "production" and listed["listen"] is None and listed["protection"] == second
    entries = audits(settings, "environment.protect")
    assert [e.target for e in entries] == ["project:octo/app/environment:production"] * 2
    assert entries[-1].detail is not None and entries[-1].detail["require_promote"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"branches": [""]}, "branches"),
        ({"branches": ["!main"]}, "branches"),
        ({"promote_role": "root"}, "promote_role"),
        ({"promote_role": "viewer"}, "promote_role"),
        ({"require_promote": "sometimes"}, "require_promote"),
        ({"require_promote": None}, "require_promote"),
        ({"who": "me"}, "who"),
    ],
)
def test_bad_rules_are_422_naming_the_field(
    client: TestClient, settings: Settings, body: dict, field: str
) -> None:
    response = client.put(PROTECTION, json=body, headers=bearer(settings, Role.ops))
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(field), response.json()
    assert audits(settings, "environment.protect") == []


def test_an_environment_name_that_cannot_be_one_is_422(client: TestClient, settings: Settings) -> None:
    response = client.put(
        f"{BASE}/environments/Prod!/protection", json={}, headers=bearer(settings, Role.ops)
    )
    assert response.status_code == 422 and "environment" in response.json()["detail"]


def test_the_promote_role_governs_promote_rollback_and_deployment_control(
    client: TestClient, settings: Settings, build_id: int
) -> None:
    ops, admin = bearer(settings, Role.ops), bearer(settings, Role.admin)
    developer = bearer(settings, Role.developer)
    promote = f"{BASE}/environments/production/promote"
    assert client.post(promote, json={"build_id": build_id}, headers=developer).status_code == 403
    client.put(PROTECTION, json={"promote_role": "admin"}, headers=ops)
    refused = client.post(promote, json={"build_id": build_id}, headers=ops)
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "deployments of environment 'production' need the admin role (its promote_role); the token has ops"
    )
    promoted = client.post(promote, json={"build_id": build_id}, headers=admin)
    assert promoted.status_code == 202, promoted.text
    deployment = promoted.json()["id"]
    assert client.post(f"/api/v1/deployments/{deployment}/abort", headers=ops).status_code == 403
    assert client.post(f"{BASE}/environments/production/rollback", headers=ops).status_code == 403
    # Developers may, where ops say so; staging's rules are still the default ones (ops).
    client.put(PROTECTION, json={"promote_role": "developer"}, headers=ops)
    assert client.post(f"/api/v1/deployments/{deployment}/abort", headers=developer).status_code == 202
    assert client.post(f"{BASE}/environments/staging/rollback", headers=developer).status_code == 403


def test_a_promote_the_rules_do_not_allow_is_409_saying_which_rule(
    client: TestClient, settings: Settings, build_id: int
) -> None:
    ops = bearer(settings, Role.ops)
    client.put(PROTECTION, json={"tags": ["v*"]}, headers=ops)
    refused = client.post(f"{BASE}/environments/production/promote", json={"build_id": build_id}, headers=ops)
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"build {build_id} cannot go to 'production': environment 'production' takes tags [v*] "
        "(its rules on the server); this release is of branch 'main'"
    )


def test_scoped_secrets_are_set_listed_and_removed_by_scope(client: TestClient, settings: Settings) -> None:
    ops = bearer(settings, Role.ops)
    url = f"{BASE}/secrets/DB_URL"
    assert client.put(url, json={"value": "shared-value-1"}, headers=ops).status_code == 201
    scoped = client.put(url, json={"value": VALUE, "environment": "production"}, headers=ops)
    assert scoped.status_code == 201 and scoped.json()["environment"] == "production"
    assert client.put(url, json={"value": VALUE, "environment": "production"}, headers=ops).status_code == 200
    listed = client.get(f"{BASE}/secrets", headers=ops).json()
    assert [(s["name"], s["environment"]) for s in listed] == [("DB_URL", None), ("DB_URL", "production")]
    bad = client.put(url, json={"value": VALUE, "environment": "Prod uction"}, headers=ops)
    assert (
        bad.status_code == 422 and bad.json()["detail"].startswith("environment:") and VALUE not in bad.text
    )
    assert client.delete(url, params={"environment": "staging"}, headers=ops).status_code == 404
    assert client.delete(url, params={"environment": "production"}, headers=ops).status_code == 204
    assert [s["environment"] for s in client.get(f"{BASE}/secrets", headers=ops).json()] == [None]
    targets = [e.target for e in audits(settings, "secret.set") + audits(settings, "secret.delete")]
    assert targets == [
        "project:octo/app/secret:DB_URL",
        "project:octo/app/environment:production/secret:DB_URL",
        "project:octo/app/environment:production/secret:DB_URL",
        "project:octo/app/environment:production/secret:DB_URL",
    ]


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_protects_and_lists_environments_audited_as_its_user(
    cli: CliRunner, settings: Settings, build_id: int
) -> None:
    protect = ["environment", "protect", "octo/app", "production"]
    result = cli.invoke(
        cli_app, [*protect, "--branch", "main", "--branch", "release/*", "--tag", "v*", "--require-promote"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "environment production of octo/app protected: refs branches [main, release/*] and tags [v*]; "
        "promote required, by ops or above\n"
    )
    result = cli.invoke(cli_app, [*protect, "--promote-role", "admin"])
    assert "refs branches [main, release/*] and tags [v*]; promote required, by admin" in result.output
    result = cli.invoke(cli_app, [*protect, "--default-branch-only"])
    assert "refs the default branch; promote required" in result.output
    listed = cli.invoke(cli_app, ["environment", "list", "octo/app"]).stdout.splitlines()
    assert listed[0].startswith(
        "staging\tlisten 127.0.0.1:9001\tblue_green\trefs branches [main, release/*];"
    )
    assert listed[0].endswith(f"runs build {build_id} ({'0' * 12})")
    assert listed[1].startswith("production\tlisten 127.0.0.1:9002\tcanary\trefs the default branch")
    entries = audits(settings, "environment.protect")
    assert [(e.actor, e.target) for e in entries] == [
        (f"cli:{getpass.getuser()}", "project:octo/app/environment:production")
    ] * 3
    for args, message in [
        ([*protect, "--branch", ""], "--branch: a pattern must not be empty"),
        ([*protect, "--branch", "main", "--default-branch-only"], "contradict"),
        (["environment", "protect", "octo/none", "production"], "project 'octo/none' does not exist"),
        (["environment", "protect", "octo/app", "Prod"], "environment: 'Prod' is not an environment name"),
        ([*protect, "--promote-role", "viewer"], "viewer"),
    ]:
        refused = cli.invoke(cli_app, args)
        assert refused.exit_code == 2 and message in refused.output, (args, refused.output)
    assert len(audits(settings, "environment.protect")) == 3


def test_cli_sets_lists_and_removes_a_scoped_secret(cli: CliRunner, settings: Settings) -> None:
    scoped = ["octo/app", "DB_URL", "--environment", "production"]
    result = cli.invoke(cli_app, ["secret", "set", *scoped], input=VALUE)
    assert (
        result.exit_code == 0
        and result.stdout == "secret DB_URL (environment production) of octo/app created\n"
    )
    listed = cli.invoke(cli_app, ["secret", "list", "octo/app"]).stdout
    assert listed.startswith("DB_URL\tcreated ") and listed.endswith("\tenvironment production\n")
    unscoped = cli.invoke(cli_app, ["secret", "rm", "octo/app", "DB_URL"])
    assert unscoped.exit_code == 2 and "'DB_URL' is not set for octo/app" in unscoped.output
    assert cli.invoke(cli_app, ["secret", "rm", *scoped]).exit_code == 0
    assert [e.target for e in audits(settings, "secret.delete")] == [
        "project:octo/app/environment:production/secret:DB_URL"
    ]
