"""Gitea and Forgejo webhooks: only a body signed with the repository's secret is trusted; a push, in the
shapes old and new versions send, becomes exactly one PushEvent; create, delete and other events are
answered and not built."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import select

from ciserver.app import create_app
from ciserver.config import Settings
from ciserver.forges import get_forge
from ciserver.forges.base import BadSignature, Ignored, MalformedPayload, PushEvent
from ciserver.forges.gitea import GITEA
from ciserver.store.db import session_scope
from ciserver.store.models import Build
from ciserver.store.projects import add_project
from tests.support.store import fernet_of

FIXTURES = Path(__file__).parent / "fixtures" / "gitea"
REAL_PAYLOADS = (
    Path(os.environ.get("REAL_PAYLOADS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "payloads")
    / "gitea"
)
SECRET = "gitea-hook-secret-0123"
ZERO = "0" * 40
HEAD = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def push(payload: dict[str, Any], event: str = "push") -> Any:
    return GITEA.parse({"X-Gitea-Event": event}, payload)


def gitea_headers(body: bytes, secret: str = SECRET, *, event: str = "push", **extra: str) -> dict[str, str]:
    """What Gitea sends with a delivery (services/webhook/deliver.go): its own headers and the
    GitHub- and Gogs-compatible ones."""
    delivery = str(uuid.uuid4())
    signature = sign(body, secret)
    return {
        "Content-Type": "application/json",
        "X-Gitea-Event": event,
        "X-Gitea-Event-Type": event,
        "X-Gitea-Delivery": delivery,
        "X-Gitea-Signature": signature,
        "X-Gogs-Event": event,
        "X-Gogs-Signature": signature,
        "X-GitHub-Event": event,
        "X-Hub-Signature-256": "sha256=" + signature,
        **extra,
    }


def test_gitea_is_registered_under_its_name() -> None:
    assert get_forge("gitea") is GITEA


# --- verify --------------------------------------------------------------------------------------


def test_a_body_signed_with_the_secret_is_accepted() -> None:
    body = (FIXTURES / "push.json").read_bytes()
    GITEA.verify({"X-Gitea-Signature": sign(body)}, body, SECRET)


def test_forgejos_own_signature_header_is_accepted() -> None:
    body = (FIXTURES / "push.json").read_bytes()
    GITEA.verify({"X-Forgejo-Signature": sign(body)}, body, SECRET)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "X-Gitea-Signature: missing"),
        ({"X-Gitea-Signature": ""}, "X-Gitea-Signature: missing"),
        ({"X-Gitea-Signature": "sha256=" + "0" * 64}, "expected 64 hexadecimal digits"),
        ({"X-Gitea-Signature": "0" * 64}, "does not match the body"),
        ({"X-Forgejo-Signature": "f" * 64}, "X-Forgejo-Signature: does not match"),
    ],
)
def test_a_missing_or_wrong_signature_is_refused_naming_the_header(
    headers: dict[str, str], message: str
) -> None:
    with pytest.raises(BadSignature, match=message):
        GITEA.verify(headers, b"{}", SECRET)


def test_a_signature_made_with_another_secret_or_over_another_body_is_refused() -> None:
    body = (FIXTURES / "push.json").read_bytes()
    with pytest.raises(BadSignature):
        GITEA.verify({"X-Gitea-Signature": sign(body, "another-secret-0123")}, body, SECRET)
    with pytest.raises(BadSignature):
        GITEA.verify({"X-Gitea-Signature": sign(body)}, body + b" ", SECRET)


def test_no_configured_secret_verifies_nothing() -> None:
    with pytest.raises(BadSignature, match="no webhook secret"):
        GITEA.verify({"X-Gitea-Signature": sign(b"{}", "")}, b"{}", "")


# --- parse ---------------------------------------------------------------------------------------


def test_a_branch_push_is_its_head_commit_with_the_files_of_every_listed_commit() -> None:
    event = push(load("push.json"))
    assert isinstance(event, PushEvent)
    assert (event.forge, event.repository, event.ref, event.branch, event.tag) == (
        "gitea",
        "octo/hello",
        "refs/heads/main",
        "main",
        None,
    )
    assert (event.sha, event.message, event.author) == (HEAD, "Add the greeting\n", "octo")
    assert event.changed_files == ["docs/index.md", "src/hello.py"]
    assert (event.deleted, event.forced, event.default_branch) == (False, False, "main")


def test_an_older_versions_push_without_head_commit_builds_the_commit_named_by_after() -> None:
    event = push(load("push_old_version.json"))
    assert isinstance(event, PushEvent)
    assert (event.sha, event.message) == (HEAD, "Add the greeting\n")
    # That version listed no files: path rules cannot exclude this push.
    assert event.changed_files is None


def test_the_head_is_the_commit_whose_id_is_after_whatever_the_order_of_commits() -> None:
    payload = load("push.json")
    del payload["head_commit"]
    payload["commits"].reverse()  # GitHub's order, oldest first
    event = push(payload)
    assert (event.sha, event.message) == (HEAD, "Add the greeting\n")


def test_with_neither_head_commit_nor_the_commit_listed_after_is_built() -> None:
    payload = load("push.json")
    del payload["head_commit"]
    payload["commits"] = []
    event = push(payload)
    assert (event.sha, event.message, event.changed_files) == (HEAD, "", None)


def test_an_annotated_tag_builds_the_commit_it_tags_not_the_tag_object() -> None:
    event = push(load("push_tag_annotated.json"))
    assert isinstance(event, PushEvent)
    assert (event.tag, event.branch, event.sha) == ("v1.0.0", None, HEAD)
    assert event.changed_files is None  # a new ref


def test_a_branch_deletion_is_read_from_the_zero_after_without_a_deleted_field() -> None:
    payload = load("push_branch_deleted.json")
    assert "deleted" not in payload
    event = push(payload)
    assert isinstance(event, PushEvent)
    assert (event.deleted, event.sha, event.branch) == (True, ZERO, "feature/x")


def test_a_list_cut_short_leaves_the_changed_files_unknown() -> None:
    payload = load("push.json")
    payload["total_commits"] = 40
    assert push(payload).changed_files is None
    del payload["total_commits"]  # an older version, which keeps five
    payload["commits"] = [copy.deepcopy(payload["commits"][1]) for _ in range(5)]
    assert push(payload).changed_files is None


@pytest.mark.parametrize("event", ["create", "delete"])
def test_create_and_delete_events_are_answered_and_not_built(event: str) -> None:
    result = push(load("create_tag.json"), event)
    assert isinstance(result, Ignored)
    assert result.repository == "octo/hello"
    assert "its push event is what builds" in result.reason


def test_forgejos_event_header_is_read_and_other_events_are_ignored() -> None:
    assert isinstance(GITEA.parse({"X-Forgejo-Event": "push"}, load("push.json")), PushEvent)
    ignored = GITEA.parse({"X-Gitea-Event": "issues"}, {"repository": {"full_name": "octo/hello"}})
    assert ignored == Ignored(repository="octo/hello", reason="event 'issues' is not built")


def test_a_delivery_without_an_event_header_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match="X-Gitea-Event: missing"):
        GITEA.parse({}, load("push.json"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("after"), "after: missing"),
        (lambda p: p.update(before="xyz"), "before: expected 40 or 64 hexadecimal digits"),
        (lambda p: p.update(ref="--upload-pack=evil"), "ref: starts with '-'"),
        (lambda p: p["repository"].pop("full_name"), "repository.full_name: missing"),
        (lambda p: p.update(commits="none"), "commits: expected an array"),
        (lambda p: p["head_commit"].update(id=7), "head_commit.id: expected a string"),
        (lambda p: p.update(total_commits=-1), "total_commits: must not be negative"),
        (lambda p: p.update(after=ZERO, before=ZERO), "before: all zeros"),
    ],
)
def test_a_malformed_push_names_the_field(change: Any, message: str) -> None:
    payload = load("push.json")
    change(payload)
    with pytest.raises(MalformedPayload, match=message):
        push(payload)


def test_the_repository_is_found_in_the_raw_body_past_display_names() -> None:
    body = (FIXTURES / "push.json").read_bytes()
    assert GITEA.repository_candidates(body) == ["octo/hello"]


def test_the_delivery_id_is_giteas_or_forgejos() -> None:
    assert GITEA.delivery_id({"X-Gitea-Delivery": "d-1"}) == "d-1"
    assert GITEA.delivery_id({"X-Forgejo-Delivery": "d-2"}) == "d-2"
    assert GITEA.delivery_id({"X-GitHub-Delivery": "d-3"}) is None


# --- through the API -----------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path, redis_url: str) -> Iterator[tuple[TestClient, Settings]]:
    Redis.from_url(redis_url).flushdb()
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    with TestClient(create_app(settings, outbox=False)) as client:
        with session_scope(settings.db_url) as session:
            add_project(
                session,
                name="octo/hello",
                forge="gitea",
                repo_url="https://gitea.example/octo/hello.git",
                secret=SECRET,
                fernet=fernet_of(session),
            )
        yield client, settings


def test_a_signed_gitea_push_builds_once_and_its_redelivery_answers_the_same_build(
    client: tuple[TestClient, Settings],
) -> None:
    http, settings = client
    body = (FIXTURES / "push.json").read_bytes()
    headers = gitea_headers(body)
    first = http.post("/webhooks/gitea/octo/hello", content=body, headers=headers)
    assert first.status_code == 202, first.text
    again = http.post("/webhooks/gitea", content=body, headers=headers)
    assert again.status_code == 200
    assert again.json()["build_id"] == first.json()["build_id"]
    with session_scope(settings.db_url) as session:
        [build] = session.scalars(select(Build)).all()
        assert (build.sha, build.branch) == (HEAD, "main")


def test_a_wrong_signature_a_create_event_and_a_branch_deletion_build_nothing(
    client: tuple[TestClient, Settings],
) -> None:
    http, settings = client
    body = (FIXTURES / "push.json").read_bytes()
    wrong = http.post("/webhooks/gitea/octo/hello", content=body, headers=gitea_headers(body, "x" * 20))
    assert (wrong.status_code, wrong.json()["message"]) == (401, "X-Gitea-Signature: does not match the body")
    create = (FIXTURES / "create_tag.json").read_bytes()
    answer = http.post(
        "/webhooks/gitea/octo/hello", content=create, headers=gitea_headers(create, event="create")
    )
    assert answer.status_code == 200
    deleted = (FIXTURES / "push_branch_deleted.json").read_bytes()
    answer = http.post("/webhooks/gitea/octo/hello", content=deleted, headers=gitea_headers(deleted))
    assert (answer.status_code, answer.json()["message"]) == (
        200,
        "refs/heads/feature/x was deleted: nothing to build",
    )
    with session_scope(settings.db_url) as session:
        assert session.scalars(select(Build)).all() == []


# --- published payloads (not redistributed: read from REAL_PAYLOADS_DIR when present) ------------


def _real_files() -> list[Any]:
    if not REAL_PAYLOADS.is_dir():
        reason = f"published Gitea payloads not present at {REAL_PAYLOADS} (set REAL_PAYLOADS_DIR)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [
        pytest.param(path, id=str(path.relative_to(REAL_PAYLOADS)))
        for path in sorted(REAL_PAYLOADS.rglob("*.json"))
        if path.name != "headers.json"
    ]


def _event_of(path: Path, payload: dict[str, Any]) -> str:
    if path.parent.name == "pull_request":
        return "pull_request"
    return "create" if "ref_type" in payload else "push"


@pytest.mark.parametrize("path", _real_files())
def test_every_published_gitea_body_is_handled(path: Path) -> None:
    body = path.read_bytes()
    payload = json.loads(body)
    event = _event_of(path, payload)
    headers = gitea_headers(body, event=event)
    GITEA.verify(headers, body, SECRET)
    assert GITEA.repository_path(payload) == payload["repository"]["full_name"]
    assert payload["repository"]["full_name"] in GITEA.repository_candidates(body)

    result = GITEA.parse(headers, payload)
    if event != "push":
        assert isinstance(result, Ignored)
        return
    assert isinstance(result, PushEvent)
    assert result.repository == payload["repository"]["full_name"]
    assert result.ref == payload["ref"] and result.branch is not None
    head = payload.get("head_commit") or next(c for c in payload["commits"] if c["id"] == payload["after"])
    assert (result.sha, result.message) == (head["id"], head["message"])
    assert result.author == payload["pusher"]["login"]
    if payload["before"] == ZERO:
        assert result.changed_files is None
