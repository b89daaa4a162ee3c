"""What a forge gets back from /webhooks for every kind of delivery: the app in process, with a
real SQLite database and a real Redis queue (no worker: these tests look at what is recorded)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from sqlalchemy import select

from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.outbox import enqueue_lost_builds
from ciserver.store.db import session_scope
from ciserver.store.key_check import open_server_key
from ciserver.store.models import Build, Project
from ciserver.store.projects import add_project
from tests.support.payloads import (
    ZERO_SHA,
    github_headers,
    github_push_body,
    gitlab_headers,
    gitlab_push_body,
)
from tests.support.store import fernet_of

SHA = "a" * 40


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    Redis.from_url(redis_url).flushdb()
    return Settings(data_dir=tmp_path, redis_url=redis_url, max_body_bytes=64 * 1024)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, outbox=False)) as client:
        with session_scope(settings.db_url) as session:
            add_project(
                session,
                name="octo/hello",
                forge="github",
                repo_url="https://x.test/h.git",
                secret="s3cret",
                fernet=fernet_of(session),
            )
            add_project(
                session,
                name="group/sub/app",
                forge="gitlab",
                repo_url="https://x.test/a.git",
                secret="tok",
                fernet=fernet_of(session),
            )
        yield client


def builds(settings: Settings) -> list[Build]:
    with session_scope(settings.db_url) as session:
        return list(session.query(Build).order_by(Build.id))


def github(  # type: ignore[no-untyped-def]
    client: TestClient, body: bytes, secret: str = "s3cret", url: str = "/webhooks/github", **kw: str
):
    return client.post(url, content=body, headers=github_headers(body, secret, **kw))


def test_a_push_is_recorded_and_enqueued_once(client: TestClient, settings: Settings) -> None:
    response = github(client, github_push_body("octo/hello", SHA, message="fix: it"))
    assert response.status_code == 202
    build_id = response.json()["build_id"]
    [build] = builds(settings)
    assert (build.id, build.status, build.sha, build.branch, build.message) == (
        build_id,
        "queued",
        SHA,
        "main",
        "fix: it",
    )
    assert Queue("builds", connection=Redis.from_url(settings.redis_url)).job_ids == [f"build-{build_id}"]


def test_a_signed_ping_answers_200(client: TestClient) -> None:
    body = json.dumps(
        {"zen": "Design for failure.", "hook_id": 1, "repository": {"full_name": "octo/hello"}}
    ).encode()
    response = github(client, body, event="ping")
    assert response.status_code == 200 and "pong" in response.json()["message"]


@pytest.mark.parametrize(
    ("change", "code", "names"),
    [
        ({"X-Hub-Signature-256": None}, 401, "X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401, "X-Hub-Signature-256"),
        ({"X-Hub-Signature-256": "sha256=abc"}, 401, "X-Hub-Signature-256"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
    ],
)
def test_bad_headers_are_refused_naming_the_header_and_record_nothing(
    client: TestClient, settings: Settings, change: dict[str, str | None], code: int, names: str
) -> None:
    body = github_push_body("octo/hello", SHA)
    headers = {k: v for k, v in {**github_headers(body, "s3cret"), **change}.items() if v is not None}
    response = client.post("/webhooks/github", content=body, headers=headers)
    assert response.status_code == code
    assert names in response.json()["message"]
    assert builds(settings) == []


def test_a_signature_over_a_different_body_is_refused(client: TestClient, settings: Settings) -> None:
    body = github_push_body("octo/hello", SHA)
    headers = github_headers(body.replace(b"main", b"evil"), "s3cret")
    assert client.post("/webhooks/github", content=body, headers=headers).status_code == 401
    assert builds(settings) == []


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"{not json", "body"),
        (
            json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "octo/hello"}}).encode(),
            "missing",
        ),
        (github_push_body("octo/hello", "not-a-sha"), "after"),
        (github_push_body("octo/hello", SHA, ref="refs/heads/--upload-pack=touch /tmp/pwned"), "ref"),
        (github_push_body("octo/hello", SHA, ref="refs/heads/a..b"), "ref"),
        (b"[" * 20_000 + b"]" * 20_000, "body"),
    ],
)
def test_malformed_payloads_get_422_naming_the_field(
    client: TestClient, settings: Settings, body: bytes, names: str
) -> None:
    # The project's own URL: a body that names no repository is verified with its secret, then parsed.
    response = github(client, body, url="/webhooks/github/octo/hello")
    assert response.status_code == 422, response.text
    assert names in response.json()["message"]
    assert builds(settings) == []


@pytest.mark.parametrize("project_url", [False, True])
@pytest.mark.parametrize("signature", ["missing", "wrong"])
def test_an_unregistered_repository_gets_the_same_answer_as_a_bad_signature(
    client: TestClient, settings: Settings, project_url: bool, signature: str
) -> None:
    """Otherwise anyone could list the registered repositories by asking for each name."""

    def answer(name: str, secret: str) -> tuple[int, object]:
        body = github_push_body(name, SHA)
        headers = github_headers(body, secret)
        if signature == "missing":
            del headers["X-Hub-Signature-256"]
        url = f"/webhooks/github/{name}" if project_url else "/webhooks/github"
        response = client.post(url, content=body, headers=headers)
        return response.status_code, response.json()

    bad_signature = answer("octo/hello", "wrong")
    assert bad_signature[0] == 401
    assert answer("octo/unknown", "s3cret") == bad_signature
    assert answer("group/sub/app", "tok") == bad_signature, "a project of another forge is unknown here"
    assert builds(settings) == []


@pytest.mark.parametrize("project_url", [False, True])
def test_an_unregistered_gitlab_project_gets_the_same_answer_as_a_wrong_token(
    client: TestClient, project_url: bool
) -> None:
    def answer(path: str, token: str) -> tuple[int, object]:
        url = f"/webhooks/gitlab/{path}" if project_url else "/webhooks/gitlab"
        response = client.post(url, content=gitlab_push_body(path, SHA), headers=gitlab_headers(token))
        return response.status_code, response.json()

    wrong_token = answer("group/sub/app", "wrong")
    assert wrong_token[0] == 401
    assert answer("group/sub/nope", "tok") == wrong_token


def test_a_push_on_the_projects_own_url_is_recorded(client: TestClient, settings: Settings) -> None:
    body = github_push_body("octo/hello", SHA)
    response = github(client, body, url="/webhooks/github/Octo/Hello")
    assert response.status_code == 202, response.text
    body = gitlab_push_body("group/sub/app", SHA)
    response = client.post("/webhooks/gitlab/group/sub/app", content=body, headers=gitlab_headers("tok"))
    assert response.status_code == 202, response.text
    assert [b.project.name for b in builds(settings)] == ["octo/hello", "group/sub/app"]


def test_a_body_for_another_repository_on_a_projects_url_is_refused(
    client: TestClient, settings: Settings
) -> None:
    """octo/other shares octo/hello's secret, so only the URL says which project was meant."""
    with session_scope(settings.db_url) as session:
        add_project(session, name="octo/other", forge="github", repo_url="https://x.test/o.git",
                    secret="s3cret", fernet=fernet_of(session))  # fmt: skip
    response = github(client, github_push_body("octo/other", SHA), url="/webhooks/github/octo/hello")
    assert response.status_code == 422
    assert response.json()["message"] == (
        "repository.full_name: the payload is for 'octo/other', not for 'octo/hello'; nothing is built"
    )
    body = gitlab_push_body("group/sub/other", SHA)
    response = client.post("/webhooks/gitlab/group/sub/app", content=body, headers=gitlab_headers("tok"))
    assert response.status_code == 422 and "'group/sub/other'" in response.json()["message"]
    assert builds(settings) == []


def test_a_shared_url_body_naming_two_repositories_builds_only_the_one_that_signed_it(
    client: TestClient, settings: Settings
) -> None:
    """JSON keeps the last of two equal keys: a body must not be verified as one project and built
    as another."""
    with session_scope(settings.db_url) as session:
        add_project(session, name="octo/victim", forge="github", repo_url="https://x.test/v.git",
                    secret="victim-secret-long", fernet=fernet_of(session))  # fmt: skip
    real = github_push_body("octo/hello", SHA)
    smuggled = real[:-1] + b', "repository": {"full_name": "octo/victim"}}'
    response = github(client, smuggled)
    assert response.status_code == 422 and "'octo/victim'" in response.json()["message"]
    assert builds(settings) == []


def test_an_organisation_ping_on_the_shared_url_answers_200(client: TestClient) -> None:
    body = json.dumps({"zen": "Approachable is better.", "hook": {"type": "Organization"},
                       "organization": {"login": "octo"}}).encode()  # fmt: skip
    response = github(client, body, event="ping")
    assert response.status_code == 200 and "pong" in response.json()["message"]


def test_a_body_over_the_limit_gets_413(client: TestClient, settings: Settings) -> None:
    body = github_push_body("octo/hello", SHA, message="x" * settings.max_body_bytes)
    assert github(client, body).status_code == 413
    assert builds(settings) == []


def test_the_body_limit_counts_streamed_bytes_and_comes_after_the_forge_and_content_type(
    client: TestClient, settings: Settings
) -> None:
    body = github_push_body("octo/hello", SHA, message="x" * settings.max_body_bytes)
    headers = github_headers(body, "s3cret")
    refusal = {"message": f"body: larger than {settings.max_body_bytes} bytes"}
    declared = client.post("/webhooks/github", content=body, headers=headers)
    streamed = client.post("/webhooks/github", content=iter([body[:1000], body[1000:]]), headers=headers)
    assert [(r.status_code, r.json()) for r in (declared, streamed)] == [(413, refusal)] * 2
    assert client.post("/webhooks/nope", content=body, headers=headers).status_code == 404
    plain = headers | {"Content-Type": "text/plain"}
    assert client.post("/webhooks/github", content=body, headers=plain).status_code == 415
    assert builds(settings) == []


@pytest.mark.parametrize("message", ["docs only [skip ci]", "[CI SKIP] typo"])
def test_skip_ci_in_the_head_commit_answers_200_and_builds_nothing(
    client: TestClient, settings: Settings, message: str
) -> None:
    response = github(client, github_push_body("octo/hello", SHA, message=message))
    assert response.status_code == 200 and "skip" in response.json()["message"].lower()
    assert builds(settings) == []


def test_a_branch_deletion_answers_200_and_builds_nothing(client: TestClient, settings: Settings) -> None:
    response = github(client, github_push_body("octo/hello", ZERO_SHA, before=SHA))
    assert response.status_code == 200 and "deleted" in response.json()["message"]
    assert builds(settings) == []


def test_an_unknown_event_is_ignored_with_200(client: TestClient, settings: Settings) -> None:
    body = json.dumps({"action": "opened", "repository": {"full_name": "octo/hello"}}).encode()
    response = github(client, body, event="issues")
    assert response.status_code == 200 and "issues" in response.json()["message"]
    assert builds(settings) == []


def test_a_gitlab_push_from_a_subgroup_is_recorded_with_its_token(
    client: TestClient, settings: Settings
) -> None:
    body = gitlab_push_body("group/sub/app", SHA)
    assert client.post("/webhooks/gitlab", content=body, headers=gitlab_headers("nope")).status_code == 401
    response = client.post("/webhooks/gitlab", content=body, headers=gitlab_headers("tok"))
    assert response.status_code == 202
    assert [b.project.name for b in builds(settings)] == ["group/sub/app"]


def test_a_gitlab_tag_push_records_a_tag_build(client: TestClient, settings: Settings) -> None:
    body = gitlab_push_body("group/sub/app", SHA, ref="refs/tags/v1.2.0")
    headers = gitlab_headers("tok", event="Tag Push Hook")
    assert client.post("/webhooks/gitlab", content=body, headers=headers).status_code == 202
    [build] = builds(settings)
    assert (build.tag, build.branch) == ("v1.2.0", None)


def test_a_redelivery_returns_the_first_build(client: TestClient, settings: Settings) -> None:
    body = github_push_body("octo/hello", SHA)
    first = github(client, body, delivery="d-1")
    again = github(client, body, delivery="d-1")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == {
        "build_id": first.json()["build_id"],
        "duplicate": True,
        "message": "delivery already received",
    }
    assert len(builds(settings)) == 1


def test_a_push_while_redis_is_down_is_recorded_and_enqueued_by_the_outbox(
    tmp_path: Path, redis_url: str
) -> None:
    down = Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(down, outbox=False)) as client:
        with session_scope(down.db_url) as session:
            add_project(
                session,
                name="octo/hello",
                forge="github",
                repo_url="https://x.test/h.git",
                secret="s3cret",
                fernet=fernet_of(session),
            )
        response = github(client, github_push_body("octo/hello", SHA))
    assert response.status_code == 202
    build_id = response.json()["build_id"]
    back = Settings(data_dir=tmp_path, redis_url=redis_url)
    Redis.from_url(redis_url).flushdb()
    import ciserver.outbox as outbox

    outbox_grace, outbox.GRACE = outbox.GRACE, outbox.GRACE * 0
    try:
        assert enqueue_lost_builds(back) == [build_id]
        assert enqueue_lost_builds(back) == [], "a build on the queue is not enqueued twice"
    finally:
        outbox.GRACE = outbox_grace
    assert Queue("builds", connection=Redis.from_url(redis_url)).job_ids == [f"build-{build_id}"]


def test_a_signed_body_replayed_under_a_new_delivery_id_builds_nothing_new(
    client: TestClient, settings: Settings
) -> None:
    body = github_push_body("octo/hello", SHA)
    first = github(client, body, delivery="d-1")
    replay = github(client, body, delivery="d-2")
    assert first.status_code == 202
    assert replay.status_code == 200
    assert replay.json()["build_id"] == first.json()["build_id"] and replay.json()["duplicate"] is True
    assert len(builds(settings)) == 1
    moved_on = github(client, github_push_body("octo/hello", "b" * 40, before=SHA))
    assert moved_on.status_code == 202, "the next push of the branch still builds"


@pytest.mark.parametrize("nesting", [b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"[" * 20_000 + b"]" * 20_000])
def test_deeply_nested_json_is_a_422_not_a_crash(
    client: TestClient, settings: Settings, nesting: bytes
) -> None:
    response = github(client, nesting, url="/webhooks/github/octo/hello")
    assert response.status_code == 422 and response.json()["message"] == "body: not valid JSON"
    assert builds(settings) == []


def test_webhook_secrets_are_kept_encrypted_and_clear_ones_from_before_are_sealed_when_a_server_starts(
    tmp_path: Path, redis_url: str
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    with session_scope(settings.db_url) as session:  # a row as an earlier release wrote it
        session.add(
            Project(name="octo/old", forge="github", repo_url="https://x.test/o.git", secret="clear-one")
        )
        add_project(
            session, name="octo/new", forge="github", repo_url="https://x.test/n.git", secret="new-one",
            fernet=fernet_of(session),
        )  # fmt: skip
    open_server_key(settings)  # what `serve`, `worker` and `up` do first
    with TestClient(create_app(settings, outbox=False)) as client:
        with session_scope(settings.db_url) as session:
            stored = {name: secret for name, secret in session.execute(select(Project.name, Project.secret))}
        assert "clear-one" not in stored["octo/old"] and "new-one" not in stored["octo/new"]
        for name, secret in (("octo/old", "clear-one"), ("octo/new", "new-one")):
            body = github_push_body(name, SHA)
            assert github(client, body, secret=secret).status_code == 202
            assert github(client, github_push_body(name, "b" * 40), secret="wrong").status_code == 401
