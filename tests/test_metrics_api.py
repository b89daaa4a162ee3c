"""GET /metrics on the API (the app in process, real SQLite and Redis): who may scrape it, the webhook
deliveries it counts, and the request id every answer carries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.store.models import Role
from tests.support.payloads import github_headers, github_push_body
from tests.support.store import bearer


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(data_dir=tmp_path, redis_url=redis_url, max_body_bytes=4096)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, outbox=False)) as client:
        yield client


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_scrape_needs_a_viewer_token(client: TestClient, settings: Settings) -> None:
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert "token" in refused.json()["detail"]
    answer = client.get("/metrics", headers=bearer(settings, Role.viewer))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(answer.text)
    assert samples[("ciserver_builds", (("status", "success"),))] == 0
    assert samples[("ciserver_metrics_source_up", (("source", "redis"),))] == 1


def test_metrics_public_serves_a_scrape_without_a_token(settings: Settings) -> None:
    public = settings.model_copy(update={"metrics_public": True})
    with TestClient(create_app(public, outbox=False)) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/api/v1/builds").status_code == 401  # only the metrics are opened


def test_webhook_deliveries_are_counted_by_forge_and_answer(client: TestClient, settings: Settings) -> None:
    body = github_push_body("octo/unknown", "a" * 40)
    assert (
        client.post("/webhooks/github", content=body, headers=github_headers(body, "x" * 32)).status_code
        == 401
    )
    assert (
        client.post("/webhooks/github", content=body, headers=github_headers(body, "y" * 32)).status_code
        == 401
    )
    assert client.post("/webhooks/<script>", content=b"{}").status_code == 404
    large = b"{" + b" " * 5000 + b"}"
    assert client.post("/webhooks/gitlab", content=large, headers={"X-Gitlab-Token": "t"}).status_code == 413
    samples = _samples(client.get("/metrics", headers=bearer(settings, Role.viewer)).text)
    delivered = "ciserver_webhook_deliveries_total"
    assert samples[(delivered, (("forge", "github"), ("status", "401")))] == 2
    assert samples[(delivered, (("forge", "unknown"), ("status", "404")))] == 1
    assert samples[(delivered, (("forge", "gitlab"), ("status", "413")))] == 1


def test_the_callers_request_id_is_echoed_and_a_new_one_made_without_it(client: TestClient) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "req-7f3a.b:2"})
    assert given.headers["X-Request-ID"] == "req-7f3a.b:2"
    made = client.get("/api/v1/builds")
    assert len(made.headers["X-Request-ID"]) == 32
    assert made.headers["X-Request-ID"] != client.get("/api/v1/builds").headers["X-Request-ID"]


@pytest.mark.parametrize("hostile", ["a b", "x" * 129, "<img src=x>", "id\u00e9", ""])
def test_a_request_id_that_is_not_sane_is_replaced(client: TestClient, hostile: str) -> None:
    answer = client.get("/healthz", headers={"X-Request-ID": hostile.encode()})
    assert answer.headers["X-Request-ID"] != hostile
    assert len(answer.headers["X-Request-ID"]) == 32
