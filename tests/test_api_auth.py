"""Who may call what: tokens and roles on the HTTP API (the app in process, real SQLite)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.store.db import session_scope
from ciserver.store.models import AuditEntry, Role, Token, utcnow
from ciserver.store.tokens import hash_token
from tests.support.payloads import WEBHOOK_SECRET as SECRET
from tests.support.store import bearer


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(data_dir=tmp_path, redis_url=redis_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, outbox=False)) as client:
        yield client


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer cis_nope"}, {"Authorization": "Basic abc"}]
)
def test_reads_without_a_valid_token_get_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/api/v1/builds", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in response.json()["detail"]


def test_a_viewer_reads_but_may_not_cancel_retry_or_register(client: TestClient, settings: Settings) -> None:
    viewer = bearer(settings, Role.viewer)
    assert client.get("/api/v1/builds", headers=viewer).json() == {"items": [], "total": 0}
    for path in ("/api/v1/builds/1/cancel", "/api/v1/builds/1/retry", "/api/v1/jobs/1/play"):
        response = client.post(path, headers=viewer)
        assert response.status_code == 403
        assert response.json()["detail"] == "this needs the developer role; the token has viewer"
    body = {"name": "o/r", "repo": "https://x.test/r.git", "forge": "github", "secret": "s"}
    assert client.post("/api/v1/projects", json=body, headers=viewer).status_code == 403


def test_ids_that_do_not_exist_get_404_naming_them(client: TestClient, settings: Settings) -> None:
    developer = bearer(settings, Role.developer)
    for method, path in [
        ("GET", "/api/v1/builds/999"),
        ("POST", "/api/v1/builds/999/cancel"),
        ("GET", "/api/v1/jobs/77/log"),
        ("POST", "/api/v1/jobs/77/play"),
        ("GET", "/api/v1/builds/999/artifacts"),
        ("GET", "/api/v1/artifacts/999"),
    ]:
        response = client.request(method, path, headers=developer)
        assert response.status_code == 404
        assert "999" in response.json()["detail"] or "77" in response.json()["detail"]


def test_a_revoked_token_stops_working_and_tokens_are_stored_as_hashes(
    client: TestClient, settings: Settings
) -> None:
    admin = bearer(settings, Role.admin)
    created = client.post("/api/v1/tokens", json={"role": "viewer", "name": "ci bot"}, headers=admin)
    assert created.status_code == 201
    secret, token_id = created.json()["token"], created.json()["id"]
    with session_scope(settings.db_url) as session:
        stored = session.get(Token, token_id)
        assert (
            stored is not None and stored.token_hash == hash_token(secret) and secret not in stored.token_hash
        )
    viewer = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/builds", headers=viewer).status_code == 200
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=admin).status_code == 200
    assert client.get("/api/v1/builds", headers=viewer).status_code == 401


def test_registering_a_project_checks_the_url_and_is_audited(client: TestClient, settings: Settings) -> None:
    admin = bearer(settings, Role.admin)
    bad = {"name": "octo/app", "repo": "ext::sh -c touch% /tmp/pwned", "forge": "github", "secret": SECRET}
    response = client.post("/api/v1/projects", json=bad, headers=admin)
    assert response.status_code == 422 and response.json()["detail"].startswith("repo:")
    good = {**bad, "repo": "https://user:hunter2@git.example.org/octo/app.git"}
    response = client.post("/api/v1/projects", json=good, headers=admin)
    assert response.status_code == 201
    assert response.json()["repo"] == "https://***@git.example.org/octo/app.git"
    assert "secret" not in response.json()
    assert client.post("/api/v1/projects", json=good, headers=admin).status_code == 409
    assert client.get("/api/v1/projects/octo/app", headers=admin).json()["name"] == "octo/app"
    with session_scope(settings.db_url) as session:
        actions = [(e.action, e.target) for e in session.query(AuditEntry)]
    assert actions == [("project.create", "project:octo/app")]


def test_a_project_registers_with_its_auto_cancel_choice(client: TestClient, settings: Settings) -> None:
    admin = bearer(settings, Role.admin)
    body = {"name": "o/quiet", "repo": "https://x.test/r.git", "forge": "github", "secret": SECRET}
    created = client.post("/api/v1/projects", json={**body, "auto_cancel": False}, headers=admin)
    assert created.status_code == 201 and created.json()["auto_cancel"] is False
    default = client.post("/api/v1/projects", json={**body, "name": "o/default"}, headers=admin)
    assert default.json()["auto_cancel"] is None
    wrong = client.post(
        "/api/v1/projects", json={**body, "name": "o/x", "auto_cancel": "sometimes"}, headers=admin
    )
    assert wrong.status_code == 422 and "auto_cancel" in wrong.text


def test_a_webhook_secret_shorter_than_16_characters_is_refused_naming_the_field(
    client: TestClient, settings: Settings
) -> None:
    admin = bearer(settings, Role.admin)
    body = {
        "name": "octo/app",
        "repo": "https://x.test/a.git",
        "forge": "github",
        "secret": "fifteen-chars-x",
    }
    response = client.post("/api/v1/projects", json=body, headers=admin)
    assert response.status_code == 422
    assert response.json() == {"detail": "secret: String should have at least 16 characters"}
    created = client.post("/api/v1/projects", json={**body, "secret": "sixteen-chars-xx"}, headers=admin)
    assert created.status_code == 201
    assert created.json()["webhook_path"] == "/webhooks/github/octo/app"


def test_a_bad_request_names_the_field_and_never_echoes_what_was_sent(
    client: TestClient, settings: Settings
) -> None:
    admin = bearer(settings, Role.admin)
    sent = {"name": "octo/app", "forge": "github", "secret": "webhook-secret-value"}  # no repo
    response = client.post("/api/v1/projects", json=sent, headers=admin)
    assert response.status_code == 422
    assert response.json() == {"detail": "repo: Field required"}
    assert "webhook-secret-value" not in response.text


def test_a_body_over_the_api_limit_gets_413_before_it_is_read(client: TestClient, settings: Settings) -> None:
    admin = bearer(settings, Role.admin)
    huge = {"name": "octo/app", "repo": "https://x.test/" + "a" * (2 * 1024 * 1024), "forge": "github"}
    response = client.post("/api/v1/projects", json=huge, headers=admin)
    assert response.status_code == 413
    assert response.json() == {"detail": "body: larger than 1,048,576 bytes"}


def test_an_expired_token_gets_401(client: TestClient, settings: Settings) -> None:
    admin = bearer(settings, Role.admin)
    created = client.post("/api/v1/tokens", json={"role": "viewer"}, headers=admin).json()
    viewer = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/builds", headers=viewer).status_code == 200
    with session_scope(settings.db_url) as session:
        token = session.get(Token, created["id"])
        assert token is not None
        token.expires_at = utcnow() - timedelta(seconds=1)
    response = client.get("/api/v1/builds", headers=viewer)
    assert response.status_code == 401
    assert response.json()["detail"] == "Authorization: the token is unknown, revoked or expired"


def test_a_token_given_an_expiry_stops_working_after_it(client: TestClient, settings: Settings) -> None:
    admin = bearer(settings, Role.admin)
    created = client.post("/api/v1/tokens", json={"role": "viewer", "expires_in": "30d"}, headers=admin)
    assert created.status_code == 201, created.text
    expires_at = datetime.fromisoformat(created.json()["expires_at"])
    assert abs(expires_at - (utcnow() + timedelta(days=30))) < timedelta(minutes=1)
    listed = {t["id"]: t for t in client.get("/api/v1/tokens", headers=admin).json()}
    assert listed[created.json()["id"]]["expires_at"] == created.json()["expires_at"]

    brief = client.post("/api/v1/tokens", json={"role": "viewer", "expires_in": 1}, headers=admin).json()
    viewer = {"Authorization": f"Bearer {brief['token']}"}
    time.sleep(1.1)
    assert client.get("/api/v1/builds", headers=viewer).status_code == 401
    with session_scope(settings.db_url) as session:
        audited = [e.detail for e in session.query(AuditEntry).filter_by(action="token.create")]
    assert audited[0]["role"] == "viewer"
    assert datetime.fromisoformat(audited[0]["expires_at"]) == expires_at


@pytest.mark.parametrize("expires_in", ["0s", 0, -5, "soon", "4000d"])
def test_an_expiry_that_is_not_a_lifetime_is_refused_naming_the_field(
    client: TestClient, settings: Settings, expires_in: object
) -> None:
    admin = bearer(settings, Role.admin)
    response = client.post("/api/v1/tokens", json={"role": "viewer", "expires_in": expires_in}, headers=admin)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("expires_in: ")
    with session_scope(settings.db_url) as session:
        assert session.query(Token).count() == 1, "only the admin's own token"
