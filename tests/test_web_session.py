"""The dashboard's sign-in, cookies and CSRF check, in process (real SQLite): what a browser is
given and what the server refuses, without a browser. The browser itself is in
tests/e2e/test_dashboard*.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.store.models import Role
from tests.support.store import bearer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def client_for(settings: Settings, base_url: str = "http://127.0.0.1") -> TestClient:
    return TestClient(create_app(settings, outbox=False), base_url=base_url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with client_for(settings) as client:
        yield client


def sign_in(client: TestClient, token: str, target: str = "/") -> tuple[int, str]:
    form = client.get("/login")
    login = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert login is not None
    answer = client.post(
        "/login", data={"csrf_token": login.group(1), "token": token, "next": target}, follow_redirects=False
    )
    return answer.status_code, answer.headers.get("location", "")


def token(settings: Settings, role: Role) -> str:
    return bearer(settings, role)["Authorization"].removeprefix("Bearer ")


def csrf_of(client: TestClient) -> str:
    found = re.search(r'name="csrf-token" content="([^"]*)"', client.get("/").text)
    assert found is not None
    return found.group(1)


def test_a_page_sends_a_browser_without_a_session_to_sign_in_and_back(client: TestClient) -> None:
    answer = client.get("/builds/3?x=1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fbuilds%2F3%3Fx%3D1"


def test_the_session_cookie_is_httponly_strict_and_secure_over_https(settings: Settings) -> None:
    with client_for(settings, "https://ci.example") as client:
        status, _ = sign_in(client, token(settings, Role.viewer))
        assert status == 303
        cookies = [c for c in client.cookies.jar if c.name == "ciserver_session"]
        assert len(cookies) == 1 and cookies[0].secure
        assert cookies[0].has_nonstandard_attr("HttpOnly")
        assert cookies[0].get_nonstandard_attr("SameSite", "").lower() == "strict"


def test_sign_in_goes_back_to_pages_of_this_server_only(client: TestClient, settings: Settings) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        client.cookies.clear()
        assert sign_in(client, token(settings, Role.viewer), target) == (303, "/")
    client.cookies.clear()
    assert sign_in(client, token(settings, Role.viewer), "/jobs/4") == (303, "/jobs/4")


def test_sign_in_refuses_a_bad_token_or_a_form_from_elsewhere(client: TestClient, settings: Settings) -> None:
    assert sign_in(client, "cis_unknown")[0] == 401
    forged = client.post("/login", data={"token": token(settings, Role.admin)}, follow_redirects=False)
    assert forged.status_code == 403  # no sign-in form token: another site's form
    assert "ciserver_session" not in client.cookies


def test_a_write_with_the_cookie_needs_the_csrf_token_and_a_bearer_token_does_not(
    client: TestClient, settings: Settings
) -> None:
    sign_in(client, token(settings, Role.admin))
    refused = client.post("/api/v1/tokens", json={"role": "viewer"})
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    wrong = client.post("/api/v1/tokens", json={"role": "viewer"}, headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    made = client.post("/api/v1/tokens", json={"role": "viewer"}, headers={"X-CSRF-Token": csrf_of(client)})
    assert made.status_code == 201, made.text
    assert client.get("/api/v1/builds").status_code == 200  # reads need no CSRF token
    client.cookies.clear()
    with_bearer = client.post("/api/v1/tokens", json={"role": "viewer"}, headers=bearer(settings, Role.admin))
    assert with_bearer.status_code == 201


def test_the_cookie_carries_its_role_as_a_bearer_token_would(client: TestClient, settings: Settings) -> None:
    sign_in(client, token(settings, Role.viewer))
    answer = client.post("/api/v1/tokens", json={"role": "viewer"}, headers={"X-CSRF-Token": csrf_of(client)})
    assert answer.status_code == 403 and "admin role" in answer.json()["detail"]


def test_pages_forbid_inline_script_and_sign_out_needs_the_csrf_token(
    client: TestClient, settings: Settings
) -> None:
    sign_in(client, token(settings, Role.viewer))
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
    out = client.post("/logout", data={"csrf_token": csrf_of(client)}, follow_redirects=False)
    assert (out.status_code, out.headers["location"]) == (303, "/login")
    assert client.get("/", follow_redirects=False).status_code == 303
