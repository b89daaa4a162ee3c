"""The deployment API in process on a real SQLite database: roles, clear refusals, the audit log,
and what an operator's pause and abort leave for the deploy worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

import ciserver.outbox as outbox
from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.store import deployments as store
from ciserver.store import releases
from ciserver.store.db import session_scope
from ciserver.store.models import AuditEntry, Project, Role
from ciserver.store.projects import add_project
from tests.support.services import redis_database
from tests.support.store import bearer, fernet_of
from tests.test_deployment_store import green

BASE = "/api/v1/projects/octo/app"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", database_url=database_url
    )  # no Redis: a deployment is recorded, the outbox hands it over


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, outbox=False)) as client:
        yield client


@pytest.fixture
def build_id(client: TestClient, settings: Settings) -> int:
    """A green build of octo/app whose release staging deployed."""
    with session_scope(settings.db_url) as session:
        project = add_project(
            session,
            name="octo/app",
            forge="github",
            repo_url="https://x.test/r",
            secret="s",
            fernet=fernet_of(session),
        )
        build_id = green(session, project)
        [staging] = releases.deployments_for_green_build(session, build_id)
        store.claim(session, staging, "worker")
        store.save_progress(session, staging, color="blue", address="127.0.0.1:40000", weight=100)
        store.finish(session, staging, store.DeploymentStatus.succeeded)
    return build_id


def test_environments_show_what_runs_where(client: TestClient, settings: Settings, build_id: int) -> None:
    response = client.get(f"{BASE}/environments", headers=bearer(settings, Role.viewer))
    assert response.status_code == 200, response.text
    staging = {env["name"]: env for env in response.json()}["staging"]
    assert (
        staging["release"]["build_id"] == build_id
        and staging["since"]
        and staging["listen"] == "127.0.0.1:9001"
    )
    assert (
        staging["latest_deployment"]["status"] == "succeeded"
        and staging["deployed_by"] == f"auto: build {build_id}"
    )
    releases = client.get(f"{BASE}/releases", headers=bearer(settings, Role.viewer)).json()
    assert [r["image_id"] for r in releases] == ["sha256:" + "1" * 64]


def test_promote_needs_ops_and_is_audited(client: TestClient, settings: Settings, build_id: int) -> None:
    url = f"{BASE}/environments/production/promote"
    assert (
        client.post(url, json={"build_id": build_id}, headers=bearer(settings, Role.developer)).status_code
        == 403
    )
    assert client.post(url, json={}, headers=bearer(settings, Role.ops)).status_code == 422
    missing = client.post(url, json={"build_id": 999}, headers=bearer(settings, Role.ops))
    assert missing.status_code == 404 and "has no build 999" in missing.json()["detail"]
    promoted = client.post(url, json={"build_id": build_id}, headers=bearer(settings, Role.ops))
    assert promoted.status_code == 202, promoted.text
    assert (promoted.json()["status"], promoted.json()["strategy"]) == ("pending", "canary")
    again = client.post(url, json={"build_id": build_id}, headers=bearer(settings, Role.ops))
    assert again.status_code == 202  # a newer pending one supersedes it
    first = client.get(f"/api/v1/deployments/{promoted.json()['id']}", headers=bearer(settings, Role.viewer))
    assert first.json()["status"] == "failed" and "superseded" in first.json()["reason"]
    with session_scope(settings.db_url) as session:
        audits = session.query(AuditEntry).filter(AuditEntry.action == "environment.promote").all()
        assert [a.target for a in audits] == ["project:octo/app/environment:production"] * 2
        assert audits[0].actor.startswith("token:")


def test_operators_pause_and_abort_and_wrong_moments_are_409(
    client: TestClient, settings: Settings, build_id: int
) -> None:
    ops = bearer(settings, Role.ops)
    deployment = client.post(
        f"{BASE}/environments/production/promote", json={"build_id": build_id}, headers=ops
    ).json()["id"]
    url = f"/api/v1/deployments/{deployment}"
    assert client.post(f"{url}/resume", headers=ops).status_code == 409
    assert client.post(f"{url}/pause", headers=bearer(settings, Role.viewer)).status_code == 403
    assert client.post(f"{url}/stop", headers=ops).status_code == 422
    assert client.post("/api/v1/deployments/999/pause", headers=ops).status_code == 404
    with session_scope(settings.db_url) as session:
        assert store.claim(session, deployment, "worker") is not None
    assert client.post(f"{url}/pause", headers=ops).status_code == 202
    with session_scope(settings.db_url) as session:
        assert store.control_of(session, deployment)[0] == "pause"
        store.pause(session, deployment)
    aborted = client.post(f"{url}/abort", headers=ops)
    assert aborted.status_code == 202 and aborted.json()["status"] == "progressing"  # a worker undoes it
    busy = client.post(f"{BASE}/environments/production/rollback", headers=ops)
    assert busy.status_code == 409 and f"deployment {deployment}" in busy.json()["detail"]
    with session_scope(settings.db_url) as session:
        actions = [a.action for a in session.query(AuditEntry).order_by(AuditEntry.id)]
    assert actions[-2:] == ["deployment.pause", "deployment.abort"]


def test_unknown_projects_and_environments_are_404(
    client: TestClient, settings: Settings, build_id: int
) -> None:
    ops = bearer(settings, Role.ops)
    assert client.get("/api/v1/projects/no/such/environments", headers=ops).status_code == 404
    rollback = client.post(f"{BASE}/environments/nowhere/rollback", headers=ops)
    assert rollback.status_code == 404 and "no environment 'nowhere'" in rollback.json()["detail"]
    with session_scope(settings.db_url) as session:
        assert session.query(Project).count() == 1


def test_the_outbox_hands_recorded_deployments_to_the_queue(
    client: TestClient, settings: Settings, build_id: int, redis_url: str
) -> None:
    promoted = client.post(
        f"{BASE}/environments/production/promote",
        json={"build_id": build_id},
        headers=bearer(settings, Role.ops),
    ).json()["id"]
    quiet = redis_database(redis_url, 4)  # a database no worker takes work from
    redis = Redis.from_url(quiet)
    redis.flushdb()
    with_redis = settings.model_copy(update={"redis_url": quiet})
    grace, outbox.GRACE = outbox.GRACE, outbox.GRACE * 0
    try:
        assert outbox.enqueue_lost_deployments(with_redis) == [promoted]
        assert outbox.enqueue_lost_deployments(with_redis) == [], "one on the queue is not enqueued twice"
    finally:
        outbox.GRACE = grace
    assert Queue("deploys", connection=redis).job_ids == [f"deploy-{promoted}"]
