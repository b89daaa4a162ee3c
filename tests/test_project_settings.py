"""A project's settings change and a project goes away, through the API (admin, audited) and the CLI:
a rotated secret is the only one that verifies, a forge token is kept encrypted and never shown, and
a project with builds running or environments deployed is not removed."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import func, select
from typer.testing import CliRunner

from ciserver.app import create_app
from ciserver.cli import app as cli_app
from ciserver.config import Settings, get_settings
from ciserver.crypto import load_fernet
from ciserver.logs import FileLogStore
from ciserver.states import Status
from ciserver.store.db import session_scope
from ciserver.store.models import (
    Artifact,
    AuditEntry,
    Build,
    Environment,
    Event,
    Job,
    Project,
    Release,
    Role,
    Secret,
)
from ciserver.store.projects import get_project
from tests.support.payloads import github_headers, github_push_body

SECRET = "the-first-webhook-secret"


@pytest.fixture
def settings(
    tmp_path: Path, redis_url: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """On SQLite and on PostgreSQL (the conftest's `database_url`), the CLI's environment the same."""
    Redis.from_url(redis_url).flushdb()
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    monkeypatch.setenv("CISERVER_DATA_DIR", str(data))
    monkeypatch.setenv("CISERVER_DATABASE_URL", database_url)
    monkeypatch.setenv("CISERVER_REDIS_URL", redis_url)
    monkeypatch.delenv("CISERVER_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    yield Settings(data_dir=data, database_url=database_url, redis_url=redis_url)
    get_settings.cache_clear()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, outbox=False)) as client:
        client.headers.update(_bearer(settings, Role.admin))
        body = {"name": "octo/app", "repo": "https://x.test/app.git", "forge": "github", "secret": SECRET}
        assert client.post("/api/v1/projects", json=body).status_code == 201
        yield client


def _bearer(settings: Settings, role: Role) -> dict[str, str]:
    from tests.support.store import bearer

    return bearer(settings, role)


def push(client: TestClient, secret: str, sha: str = "a" * 40) -> int:
    body = github_push_body("octo/app", sha)
    return client.post(
        "/webhooks/github/octo/app", content=body, headers=github_headers(body, secret)
    ).status_code


def audit(settings: Settings) -> list[tuple[str, str, object]]:
    with session_scope(settings.db_url) as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(e.action, e.target, e.detail) for e in entries if e.action.startswith("project.")]


# --- PATCH ---------------------------------------------------------------------------------------


def test_a_rotated_secret_is_shown_once_and_only_it_verifies_pushes_from_then_on(
    client: TestClient, settings: Settings
) -> None:
    answer = client.patch("/api/v1/projects/octo/app", json={"rotate_secret": True})
    assert answer.status_code == 200, answer.text
    new = answer.json()["secret"]
    assert len(new) == 64
    assert push(client, SECRET) == 401
    assert push(client, new) == 202
    assert "secret" not in client.get("/api/v1/projects/octo/app").json()
    assert audit(settings)[-1] == ("project.update", "project:octo/app", {"changed": ["secret"]})


def test_a_forge_token_is_kept_encrypted_and_the_api_only_says_that_one_is_set(
    client: TestClient, settings: Settings
) -> None:
    change = {"forge_url": "https://ghe.example/api/v3/", "forge_token": "ghp_secret-token"}
    answer = client.patch("/api/v1/projects/octo/app", json=change)
    assert answer.status_code == 200, answer.text
    shown = client.get("/api/v1/projects/octo/app").json()
    assert (shown["forge_api_url"], shown["forge_token_set"]) == ("https://ghe.example/api/v3", True)
    assert "ghp_secret-token" not in answer.text + str(shown) + str(audit(settings))
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None and project.forge_token is not None
        assert "ghp_secret-token" not in project.forge_token
        assert load_fernet(settings).decrypt(project.forge_token.encode()) == b"ghp_secret-token"
    cleared = client.patch("/api/v1/projects/octo/app", json={"forge_token": None, "forge_url": None}).json()
    assert (cleared["forge_api_url"], cleared["forge_token_set"]) == (None, False)


def test_the_project_shows_its_auto_cancel_setting_and_what_it_means(client: TestClient) -> None:
    shown = client.get("/api/v1/projects/octo/app").json()
    assert (shown["auto_cancel"], shown["auto_cancel_effective"]) == (
        None,
        "every branch but the default one",
    )
    changed = client.patch("/api/v1/projects/octo/app", json={"auto_cancel": False}).json()
    assert (changed["auto_cancel"], changed["auto_cancel_effective"]) == (False, "no branch")
    changed = client.patch("/api/v1/projects/octo/app", json={"auto_cancel": True}).json()
    assert changed["auto_cancel_effective"] == "every branch"


def test_a_new_clone_url_is_checked_as_on_registration_and_its_credentials_hidden(
    client: TestClient, settings: Settings
) -> None:
    refused = client.patch("/api/v1/projects/octo/app", json={"repo": "/srv/git/app"})
    assert refused.status_code == 422
    assert "CISERVER_ALLOW_LOCAL_REPOS" in refused.json()["detail"]
    changed = client.patch(
        "/api/v1/projects/octo/app", json={"repo": "https://bot:hunter2@git.example/app.git"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["repo"] == "https://***@git.example/app.git"
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None and "hunter2" not in project.repo_url


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"secret": "short"}, "secret"),
        ({"secret": "x" * 20, "rotate_secret": True}, "secret: give a secret or rotate_secret, not both"),
        ({"secret": None}, "secret: cannot be cleared"),
        ({"forge_url": "ftp://forge.example"}, "forge_url: 'ftp://forge.example' is not an http(s) URL"),
        ({"forge_url": "https://u:p@forge.example/api"}, "forge_url: must not hold credentials"),
        ({"forge_token": "two words"}, "forge_token: must not contain spaces"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_bad_change_is_refused_naming_the_field(
    client: TestClient, body: dict[str, object], message: str
) -> None:
    answer = client.patch("/api/v1/projects/octo/app", json=body)
    assert answer.status_code == 422
    assert message in answer.text


def test_a_refused_secret_or_token_is_never_repeated_in_the_answer(client: TestClient) -> None:
    for body in ({"secret": "hunter2-short"}, {"forge_token": "hunter2 with spaces"}):
        answer = client.patch("/api/v1/projects/octo/app", json=body)
        assert answer.status_code == 422
        assert "hunter2" not in answer.text


def test_a_gitea_token_needs_the_instances_api_url(client: TestClient) -> None:
    body = {
        "name": "team/app",
        "repo": "https://gitea.example/team/app.git",
        "forge": "gitea",
        "secret": SECRET,
    }
    assert client.post("/api/v1/projects", json=body).status_code == 201
    answer = client.patch("/api/v1/projects/team/app", json={"forge_token": "t0ken"})
    assert (answer.status_code, answer.json()["detail"][:37]) == (
        422,
        "forge_url: required with a forge toke",
    )
    both = {"forge_token": "t0ken", "forge_url": "https://gitea.example/api/v1"}
    assert client.patch("/api/v1/projects/team/app", json=both).json()["forge_token_set"] is True


def test_only_an_admin_changes_or_removes_a_project(client: TestClient, settings: Settings) -> None:
    ops = _bearer(settings, Role.ops)
    assert (
        client.patch("/api/v1/projects/octo/app", json={"auto_cancel": True}, headers=ops).status_code == 403
    )
    assert client.delete("/api/v1/projects/octo/app", headers=ops).status_code == 403
    assert client.patch("/api/v1/projects/no/such", json={"auto_cancel": True}).status_code == 404


# --- DELETE --------------------------------------------------------------------------------------


def test_a_project_with_a_build_running_is_not_removed_until_it_ends(
    client: TestClient, settings: Settings
) -> None:
    assert push(client, SECRET) == 202
    refused = client.delete("/api/v1/projects/octo/app")
    assert refused.status_code == 409
    assert "1 build(s) queued or running: cancel them first" in refused.json()["detail"]
    with session_scope(settings.db_url) as session:
        build = session.scalars(select(Build)).one()
        build.status = Status.failed
        session.add(
            Job(build_id=build.id, position=0, name="unit", stage="test", image="i", script=[], env={},
                timeout=1, after=[], status=Status.failed)
        )  # fmt: skip
        session.add(Secret(project_id=build.project_id, name="TOKEN", ciphertext="x"))
        session.flush()
        job_id = build.jobs[0].id
        session.add(Artifact(build_id=build.id, job_id=job_id, path="r.txt", size=2, sha256="0" * 64,
                             storage_key="gone/r.txt"))  # fmt: skip
        session.add(Release(project_id=build.project_id, build_id=build.id, sha=build.sha, config={}))
    log_file = FileLogStore(settings.logs_dir).path(job_id)
    log_file.parent.mkdir(parents=True)
    log_file.write_text("the log\n")
    removed = client.delete("/api/v1/projects/octo/app")
    assert (removed.status_code, removed.json()) == (200, {"name": "octo/app", "builds": 1})
    assert client.get("/api/v1/projects/octo/app").status_code == 404
    with session_scope(settings.db_url) as session:
        for table in (Project, Build, Job, Secret, Event, Artifact, Release):
            assert session.scalar(select(func.count()).select_from(table)) == 0, table
    assert not log_file.exists()
    assert audit(settings)[-1] == ("project.remove", "project:octo/app", {"builds": 1})
    assert push(client, SECRET) == 401  # its webhook is gone with it


def test_a_project_with_an_environment_deployed_is_not_removed(
    client: TestClient, settings: Settings
) -> None:
    with session_scope(settings.db_url) as session:
        project = get_project(session, "octo/app")
        assert project is not None
        session.add(Environment(project_id=project.id, name="staging", address="127.0.0.1:9001"))
    refused = client.delete("/api/v1/projects/octo/app")
    assert refused.status_code == 409
    assert "environment(s) staging still serve a release: stop its environments first" in refused.text


# --- the CLI -------------------------------------------------------------------------------------


def ciserver(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, list(args), input=input)
    return result.exit_code, result.output


def test_the_cli_rotates_a_secret_sets_a_forge_token_from_a_file_and_audits_each(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    code, output = ciserver("project", "update", "octo/app", "--rotate-secret")
    assert code == 0, output
    new = output.strip().splitlines()[-1]
    assert push(client, new) == 202
    token_file = tmp_path / "token"
    token_file.write_text("glpat-from-a-file\n")
    code, output = ciserver(
        "project", "update", "octo/app", "--forge-url", "https://gitlab.example/api/v4", "--forge-token-file",
        str(token_file), "--no-auto-cancel",
    )  # fmt: skip
    assert code == 0, output
    assert "changed forge_url, forge_token, auto_cancel" in output
    shown = client.get("/api/v1/projects/octo/app").json()
    assert (shown["forge_token_set"], shown["auto_cancel"]) == (True, False)
    actor = f"cli:{getpass.getuser()}"
    with session_scope(settings.db_url) as session:
        actors = [
            e.actor for e in session.scalars(select(AuditEntry).where(AuditEntry.action == "project.update"))
        ]
    assert actors == [actor, actor]


def test_the_cli_refuses_what_it_cannot_do_naming_the_option(client: TestClient) -> None:
    assert ciserver("project", "update", "octo/app") == (
        2,
        "error: nothing to change: give at least one option (see --help)\n",
    )
    code, output = ciserver("project", "update", "octo/app", "--secret", "x" * 20, "--rotate-secret")
    assert (code, "--secret and --rotate-secret: give one or the other" in output) == (2, True)
    code, output = ciserver("project", "update", "no/such", "--rotate-secret")
    assert (code, "project 'no/such' does not exist" in output) == (2, True)


def test_the_cli_removes_a_project_once_confirmed(client: TestClient) -> None:
    code, _ = ciserver("project", "remove", "octo/app", input="n\n")
    assert code == 1
    assert client.get("/api/v1/projects/octo/app").status_code == 200
    code, output = ciserver("project", "remove", "octo/app", "--yes")
    assert code == 0, output
    assert "project octo/app removed, with 0 build(s)" in output
    assert client.get("/api/v1/projects/octo/app").status_code == 404
