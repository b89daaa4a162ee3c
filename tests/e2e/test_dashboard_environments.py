"""The environments page in real headless Chromium against a deploying server (a real nginx, real
containers of the sample service): an ops user promotes a release and watches the canary move
without a reload; a viewer and a developer see no buttons, and the server refuses their forged
promote as the API does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from ciserver.ports import free_port
from tests.support.browser import chromium, visitor
from tests.support.git import commit, make_repo
from tests.support.server import CiServer, deploying_server
from tests.support.services import redis_database

# One database is enough here: the page drives the API, whose deployments run on both databases elsewhere.
ONE_DATABASE = True

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
PROJECT = "acme/shop"


def pipeline(port: int) -> str:
    return f"""\
stages: [build]
jobs:
  package:
    stage: build
    image_build: {{context: .}}
environments:
  production:
    auto: false
    listen: 127.0.0.1:{port}
    strategy: {{canary: {{steps: [50, 100], interval: 6s, max_error_rate: 0.5, min_requests: 1}}}}
service: {{port: 8000, health: /healthz, health_timeout: 30s}}
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str, e2e_database: str
) -> Iterator[CiServer]:
    root = tmp_path_factory.mktemp("dashboard-deploy")
    files = {name: (EXAMPLE / name).read_text() for name in ("app.py", "Dockerfile")}
    make_repo(root / "repo", {**files, "pipelines.yml": pipeline(free_port())})
    with deploying_server(root, redis_database(redis_url, 15), workers=2) as server:
        server.add_project(PROJECT, root / "repo")
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as found:
        yield found


# A promote sent from the page itself, with the cookie and the page's CSRF token: only the role is wrong.
PROMOTE = """([url, build]) => fetch(url, {
  method: "POST",
  headers: {"Content-Type": "application/json",
            "X-CSRF-Token": document.querySelector("meta[name=csrf-token]").content},
  body: JSON.stringify({build_id: build}),
}).then(async (r) => [r.status, await r.text()])"""


def green_build(server: CiServer, note: str) -> int:
    sha = commit(server.root / "repo", {"NOTE": note}, note)
    response = server.push_github(PROJECT, sha)
    assert response.status_code == 202, response.text
    build = server.wait_build(response.json()["build_id"], timeout=180)
    assert build["status"] == "success", build
    return int(build["id"])


def deployed(server: CiServer, deployment_id: int, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = server.http.get(f"/api/v1/deployments/{deployment_id}").json()
        if found["status"] in ("succeeded", "failed", "rolled_back"):
            return dict(found)
        time.sleep(0.2)
    raise AssertionError(f"deployment {deployment_id} never ended")


def test_an_ops_user_promotes_from_the_page_and_watches_the_canary_live(
    server: CiServer, browser: Browser, tmp_path: Path
) -> None:
    # The first release goes out through the API; the second is promoted from the page, as a canary.
    first = green_build(server, "v1")
    promoted = server.http.post(
        f"/api/v1/projects/{PROJECT}/environments/production/promote",
        json={"build_id": first},
        headers={"Authorization": f"Bearer {server.token_for('ops')}"},
    )
    assert promoted.status_code == 202, promoted.text
    assert deployed(server, promoted.json()["id"])["status"] == "succeeded"
    build_id = green_build(server, "v2")
    path = f"/projects/{PROJECT}/environments"

    for role in ("viewer", "developer"):
        with visitor(browser, server.url, server.token_for(role), tmp_path) as someone:
            page = someone.open(path)
            card = page.locator("section.environment[data-environment='production']")
            expect(card.locator(".runs")).to_contain_text(f"build #{first}")
            assert card.locator("button").count() == 0
            answer = page.evaluate(
                PROMOTE, [f"/api/v1/projects/{PROJECT}/environments/production/promote", build_id]
            )
            assert answer[0] == 403 and "role" in answer[1], answer

    with visitor(browser, server.url, server.token_for("ops"), tmp_path) as ops:
        page = ops.open(path)
        page.evaluate("window.notReloaded = true")
        card = page.locator("section.environment[data-environment='production']")
        card.locator("select[name=build_id]").select_option(str(build_id))
        card.locator("button", has_text="Promote").click()
        expect(page.locator("#flash")).to_contain_text("Promote: deployment #")
        deployment = card.locator(".deployment")
        expect(deployment.locator(".status")).to_have_text("progressing", timeout=60_000)
        label = deployment.locator(".weight-label")
        expect(label).to_contain_text("50% of requests to the new release · step 1 of 2", timeout=60_000)
        ops.screenshot("environments-canary")
        card.locator("button", has_text="Pause").click()
        expect(deployment.locator(".status")).to_have_text("paused", timeout=30_000)
        expect(deployment.locator(".why")).to_contain_text("Resume goes on from this step")
        card.locator("button", has_text="Resume").click()
        expect(deployment.locator(".status")).to_have_text("succeeded", timeout=60_000)
        expect(deployment.locator(".weight-label")).to_contain_text("100% of requests")
        expect(card.locator(".runs")).to_contain_text(f"build #{build_id}")
        assert page.evaluate("window.notReloaded")
        ops.screenshot("environments")
    deployments = server.http.get("/api/v1/deployments", params={"project": PROJECT}).json()
    assert [(d["build_id"], d["status"]) for d in deployments] == [
        (build_id, "succeeded"),
        (first, "succeeded"),
    ]
    audit = [action for _, action, _ in server.audit()]
    assert audit.count("environment.promote") == 2 and "deployment.pause" in audit
