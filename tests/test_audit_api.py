"""The audit log as an admin reads it: through GET /api/v1/audit (admin only, newest first, filtered
and paged) and `ciserver audit` on the server's host, on both databases."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ciserver.app import create_app
from ciserver.cli import app as cli_app
from ciserver.config import Settings
from ciserver.store import audit
from ciserver.store.db import session_scope
from ciserver.store.models import Role
from tests.support.store import bearer

ACTOR = f"cli:{getpass.getuser()}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    (tmp_path / "data").mkdir()
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, outbox=False)) as client:
        yield client


def test_an_admin_reads_every_write_newest_first_with_who_and_what(
    client: TestClient, settings: Settings
) -> None:
    admin = bearer(settings, Role.admin)
    made = client.post("/api/v1/tokens", json={"role": "viewer", "name": "ci bot"}, headers=admin)
    assert made.status_code == 201
    viewer_id = made.json()["id"]
    assert client.delete(f"/api/v1/tokens/{viewer_id}", headers=admin).status_code == 200

    answer = client.get("/api/v1/audit", headers=admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"] == 2
    revoke, create = body["items"]
    assert (revoke["action"], revoke["target"]) == ("token.revoke", f"token:{viewer_id}")
    assert (create["action"], create["detail"]) == ("token.create", {"role": "viewer"})
    assert create["actor"] == revoke["actor"] and create["actor"].startswith("token:")
    assert revoke["id"] > create["id"] and revoke["at"] >= create["at"]


@pytest.mark.parametrize("role", [Role.viewer, Role.developer, Role.ops])
def test_roles_below_admin_get_403_and_no_token_401(
    client: TestClient, settings: Settings, role: Role
) -> None:
    refused = client.get("/api/v1/audit", headers=bearer(settings, role))
    assert refused.status_code == 403
    assert "admin" in refused.json()["detail"]
    assert client.get("/api/v1/audit").status_code == 401


def test_filters_by_actor_action_and_target_under_it_and_pages(
    client: TestClient, settings: Settings
) -> None:
    with session_scope(settings.db_url) as session:
        for n in range(5):
            audit.record(
                session, "token:1 (ops)", "environment.promote", f"project:acme/app/environment:e{n}"
            )
        audit.record(session, "cli:root", "project.create", "project:acme/app")
        audit.record(session, "cli:root", "project.create", "project:acme/app2")
        audit.record(session, "cli:root", "project.create", "project:acme/a%")
    admin = bearer(settings, Role.admin)

    def targets(**query: object) -> tuple[list[str], int]:
        answer = client.get("/api/v1/audit", params=query, headers=admin)
        assert answer.status_code == 200, answer.text
        return [e["target"] for e in answer.json()["items"]], answer.json()["total"]

    found, total = targets(target="project:acme/app")
    assert total == 6 and "project:acme/app2" not in found  # the thing and what is under it, not a prefix
    assert targets(target="project:acme/a%") == (["project:acme/a%"], 1)  # taken literally
    assert targets(actor="cli:root", action="project.create")[1] == 3
    page, total = targets(action="environment.promote", limit=2, offset=1)
    assert page == ["project:acme/app/environment:e3", "project:acme/app/environment:e2"] and total == 5
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"target": "x" * 1025}):
        refused = client.get("/api/v1/audit", params=bad, headers=admin)
        assert refused.status_code == 422 and next(iter(bad)) in refused.text


def test_the_cli_shows_the_log_newest_first_as_text_or_json(settings: Settings, cli: CliRunner) -> None:
    assert cli.invoke(cli_app, ["token", "create", "--role", "ops", "--name", "deployer"]).exit_code == 0
    with session_scope(settings.db_url) as session:
        audit.record(session, ACTOR, "project.create", "project:acme/\x1b[31mred", {"forge": "github"})

    shown = cli.invoke(cli_app, ["audit"])
    assert shown.exit_code == 0, shown.output
    lines = [line.split("\t") for line in shown.stdout.splitlines()]
    assert [line[1:4] for line in lines] == [
        [ACTOR, "project.create", "project:acme/\\x1b[31mred"],  # no escape reaches the terminal
        [ACTOR, "token.create", "token:1"],
    ]
    assert lines[0][4] == '{"forge": "github"}' and lines[1][4] == '{"role": "ops"}'

    as_json = cli.invoke(cli_app, ["audit", "--json", "--limit", "1"])
    assert as_json.exit_code == 0, as_json.output
    [entry] = json.loads(as_json.stdout)
    assert entry["action"] == "project.create" and entry["target"] == "project:acme/\x1b[31mred"
    only = cli.invoke(cli_app, ["audit", "--action", "token.create", "--json"])
    assert [e["target"] for e in json.loads(only.stdout)] == ["token:1"]
