"""GitLab webhooks: only a delivery carrying the project's secret token is trusted, and a push or tag
push becomes exactly one PushEvent (or a clear 422 naming the field that is wrong)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from ciserver.forges import get_forge
from ciserver.forges.base import BadSignature, Ignored, MalformedPayload, Ping, PushEvent
from ciserver.forges.gitlab import GITLAB
from tests.support.forge_fuzz import json_values, mutated_fixtures

FIXTURES = Path(__file__).parent / "fixtures" / "gitlab"
REAL_PAYLOADS = (
    Path(os.environ.get("REAL_PAYLOADS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "payloads")
    / "gitlab"
)
SECRET = "glpat-not-really-a-token"
ZERO = "0" * 40
PUSH = {"X-Gitlab-Event": "Push Hook"}
TAG_PUSH = {"X-Gitlab-Event": "Tag Push Hook"}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def parse(payload: Any, headers: dict[str, str] | None = None) -> Any:
    return GITLAB.parse(PUSH if headers is None else headers, payload)


def test_gitlab_is_registered_under_its_name() -> None:
    assert get_forge("gitlab") is GITLAB


# --- verify --------------------------------------------------------------------------------------


def test_a_delivery_carrying_the_secret_token_is_accepted() -> None:
    GITLAB.verify({"X-Gitlab-Token": SECRET}, b"{}", SECRET)


def test_a_delivery_with_another_token_is_refused() -> None:
    with pytest.raises(
        BadSignature, match=r"^X-Gitlab-Token: does not match the configured secret$"
    ) as caught:
        GITLAB.verify({"X-Gitlab-Token": SECRET + "x"}, b"{}", SECRET)
    assert type(caught.value) is BadSignature


def test_a_delivery_without_a_token_is_refused_naming_the_header() -> None:
    with pytest.raises(BadSignature, match=r"^X-Gitlab-Token: missing$"):
        GITLAB.verify({"X-Gitlab-Event": "Push Hook"}, b"{}", SECRET)


def test_without_a_configured_secret_even_an_empty_token_is_refused() -> None:
    with pytest.raises(BadSignature, match="no webhook secret is configured"):
        GITLAB.verify({"X-Gitlab-Token": ""}, b"{}", "")


def test_the_token_header_is_matched_whatever_its_case() -> None:
    GITLAB.verify({"x-gitlab-token": SECRET}, b"{}", SECRET)
    GITLAB.verify(Headers({"X-GITLAB-TOKEN": SECRET}), b"{}", SECRET)


def test_a_non_ascii_secret_matches_as_text_or_as_the_bytes_an_asgi_server_decoded() -> None:
    secret = "s\u00e9cret-\u2603"
    GITLAB.verify({"X-Gitlab-Token": secret}, b"{}", secret)
    raw = Headers(raw=[(b"x-gitlab-token", secret.encode("utf-8"))])  # starlette decodes as latin-1
    GITLAB.verify(raw, b"{}", secret)
    with pytest.raises(BadSignature):
        GITLAB.verify({"X-Gitlab-Token": "s\u00e9cret-"}, b"{}", secret)


# --- delivery id and repository ------------------------------------------------------------------


def test_the_delivery_id_is_the_idempotency_key_that_survives_retries() -> None:
    headers = Headers({"idempotency-key": "f5e5f430-0000", "x-gitlab-event-uuid": "13792a34-0000"})
    assert GITLAB.delivery_id(headers) == "f5e5f430-0000"


def test_before_gitlab_17_4_the_delivery_id_is_the_event_uuid() -> None:
    assert GITLAB.delivery_id({"X-Gitlab-Event-UUID": "13792a34-0000"}) == "13792a34-0000"
    assert GITLAB.delivery_id({}) is None


def test_the_repository_keeps_every_subgroup() -> None:
    assert GITLAB.repository_path(load("push_subgroup.json")) == "acme/platform/payments/ledger"
    assert GITLAB.repository_path({"object_kind": "build"}) is None


# --- parse ---------------------------------------------------------------------------------------


def test_a_push_becomes_a_push_event_with_the_union_of_its_changed_files() -> None:
    payload = load("push.json")
    assert parse(payload) == PushEvent(
        forge="gitlab",
        repository="acme/webapp",
        ref="refs/heads/main",
        branch="main",
        tag=None,
        before=payload["before"],
        sha=payload["checkout_sha"],
        message="Remove the old total\n\nNo longer used.",
        author="Grace Hopper",
        changed_files=["web/app.py", "web/basket.html", "web/old_total.py"],
        deleted=False,
        forced=False,
        default_branch="main",
    )


def test_more_commits_than_gitlab_listed_make_the_changed_files_unknowable() -> None:
    payload = load("push.json") | {"total_commits_count": 25}
    assert parse(payload).changed_files is None


def test_a_new_branch_has_unknowable_changed_files() -> None:
    payload = load("push.json") | {"before": ZERO}
    event = parse(payload)
    assert (event.before, event.changed_files) == (ZERO, None)


def test_a_tag_push_names_the_tag_and_no_branch() -> None:
    payload = load("tag_push.json")
    event = parse(payload, TAG_PUSH)
    assert isinstance(event, PushEvent)
    assert (event.tag, event.branch, event.sha) == ("v1.0.0", None, payload["checkout_sha"])
    assert (event.message, event.changed_files) == ("", None)


def test_an_annotated_tag_builds_the_commit_it_points_at() -> None:
    payload = load("tag_push_annotated.json")
    event = parse(payload, TAG_PUSH)
    assert payload["after"] != payload["checkout_sha"]
    assert event.sha == payload["checkout_sha"]
    assert event.message == payload["commits"][0]["message"]


def test_without_a_checkout_sha_the_push_builds_after() -> None:
    payload = load("push.json") | {"checkout_sha": None}
    assert parse(payload).sha == payload["after"]


def test_a_project_in_subgroups_keeps_its_full_path() -> None:
    assert parse(load("push_subgroup.json")).repository == "acme/platform/payments/ledger"


def test_a_branch_deletion_is_a_deleted_push_at_the_zero_sha() -> None:
    event = parse(load("push_branch_deleted.json"))
    assert isinstance(event, PushEvent)
    assert (event.deleted, event.sha, event.branch) == (True, ZERO, "feature/basket")
    assert (event.message, event.changed_files) == ("", None)


def test_gitlab_never_says_a_push_was_forced() -> None:
    assert parse(load("push.json")).forced is False


@pytest.mark.parametrize(
    ("headers", "kind"),
    [({}, "push"), ({}, "tag_push"), ({"X-Gitlab-Event": "System Hook"}, "push")],
)
def test_the_payloads_object_kind_says_push_when_the_header_does_not(
    headers: dict[str, str], kind: str
) -> None:
    payload = load("push.json") | {"object_kind": kind}
    assert isinstance(parse(payload, headers), PushEvent)


@pytest.mark.parametrize("event", ["Issue Hook", "Merge Request Hook", "Pipeline Hook", "push"])
def test_other_hooks_are_ignored_with_the_reason(event: str) -> None:
    assert parse(load("push.json"), {"X-Gitlab-Event": event}) == Ignored(
        repository="acme/webapp", reason=f"event {event!r} is not built"
    )


def test_a_system_hook_for_something_else_is_ignored() -> None:
    payload = {"object_kind": "repository_update", "project": {"path_with_namespace": "acme/webapp"}}
    event = parse(payload, {"X-Gitlab-Event": "System Hook"})
    assert event == Ignored(repository="acme/webapp", reason="object_kind 'repository_update' is not built")


def test_a_delivery_that_says_nothing_of_its_event_is_malformed() -> None:
    payload = load("push.json")
    del payload["object_kind"]
    with pytest.raises(MalformedPayload, match=r"^X-Gitlab-Event: missing"):
        parse(payload, {})


def test_a_push_to_a_ref_outside_branches_and_tags_is_ignored() -> None:
    event = parse(load("push.json") | {"ref": "refs/merge-requests/3/head"})
    assert isinstance(event, Ignored)
    assert "neither a branch nor a tag" in event.reason


@pytest.mark.parametrize(
    "ref", ["refs/heads/--upload-pack=touch /tmp/pwned", "refs/tags/v1..2", "refs/heads/a b"]
)
def test_a_ref_git_would_refuse_or_read_as_an_option_is_malformed(ref: str) -> None:
    with pytest.raises(MalformedPayload, match=r"^ref: "):
        parse(load("push.json") | {"ref": ref})


@pytest.mark.parametrize("branch", ["fix-$HOME", "a;reboot", "a&&b||c", "`id`", "$(id)"])
def test_shell_metacharacters_in_a_branch_are_carried_through_unchanged(branch: str) -> None:
    event = parse(load("push.json") | {"ref": f"refs/heads/{branch}"})
    assert (event.ref, event.branch) == (f"refs/heads/{branch}", branch)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"project": {}}, "project.path_with_namespace: missing"),
        ({"project": None}, "project: expected an object, got null"),
        ({"checkout_sha": 5}, "checkout_sha: expected a string, got a number"),
        ({"checkout_sha": "abc"}, "checkout_sha: expected 40 or 64 hexadecimal digits, got 'abc'"),
        ({"total_commits_count": "3"}, "total_commits_count: expected an integer, got a string"),
        ({"total_commits_count": True}, "total_commits_count: expected an integer, got a boolean"),
        ({"total_commits_count": -1}, "total_commits_count: must not be negative"),
        ({"user_name": None}, "user_name: expected a string, got null"),
        ({"before": ZERO, "after": ZERO}, "before: all zeros, but a deleted ref must have pointed somewhere"),
    ],
)
def test_a_wrong_field_is_named_by_its_dotted_path(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedPayload) as caught:
        parse(load("push.json") | change)
    assert caught.value.message == message
    assert type(caught.value) is MalformedPayload


def test_a_commit_without_an_id_is_named_by_its_index() -> None:
    payload = load("push.json")
    del payload["commits"][2]["id"]
    with pytest.raises(MalformedPayload, match=r"^commits\[2\]\.id: missing$"):
        parse(payload)


# --- properties ----------------------------------------------------------------------------------

HOOKS = st.sampled_from(["Push Hook", "Tag Push Hook", "System Hook", "Issue Hook"]) | st.text(max_size=10)
INTERESTING = [
    ZERO,
    "A" * 40,
    "refs/heads/..",
    "refs/heads/-x",
    "refs/tags/v1",
    "push",
    "tag_push",
    "",
    "\x00",
    "\ud800",
]
JSON = json_values(list(INTERESTING))
mutated = mutated_fixtures(FIXTURES, JSON)


def _parse_only_raises_malformed(headers: dict[str, str], payload: Any) -> None:
    try:
        result = GITLAB.parse(headers, payload)
    except MalformedPayload as exc:
        assert type(exc) is MalformedPayload
        assert exc.message
        return
    assert isinstance(result, PushEvent | Ping | Ignored)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(hook=st.none() | HOOKS, payload=JSON)
def test_no_json_value_makes_parse_raise_anything_but_malformed_payload(
    hook: str | None, payload: Any
) -> None:
    _parse_only_raises_malformed({} if hook is None else {"X-Gitlab-Event": hook}, payload)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(hook=st.sampled_from(["Push Hook", "Tag Push Hook", "System Hook"]), payload=mutated)
def test_no_damage_to_a_real_shape_makes_parse_raise_anything_but_malformed_payload(
    hook: str, payload: Any
) -> None:
    _parse_only_raises_malformed({"X-Gitlab-Event": hook}, payload)


@settings(max_examples=300)
@given(
    body=st.binary(),
    secret=st.text(min_size=1),
    headers=st.dictionaries(st.sampled_from(["X-Gitlab-Token", "x-gitlab-token", "X-Other"]), st.text()),
)
def test_random_bodies_and_tokens_make_verify_raise_only_bad_signature(
    body: bytes, secret: str, headers: dict[str, str]
) -> None:
    try:
        GITLAB.verify(headers, body, secret)
    except BadSignature as exc:
        assert type(exc) is BadSignature
        return
    # Accepted only if a token header carried the secret's bytes (as text, or as latin-1 decoded bytes).
    expected = secret.encode()
    sent = [value for name, value in headers.items() if name.lower() == "x-gitlab-token"]
    assert any(value == secret or value.encode("latin-1", "replace") == expected for value in sent)


# --- published payloads (not redistributed: read from REAL_PAYLOADS_DIR when present) ------------


def _real_files() -> list[Any]:
    if not REAL_PAYLOADS.is_dir():
        reason = f"published GitLab payloads not present at {REAL_PAYLOADS} (set REAL_PAYLOADS_DIR)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [
        pytest.param(path, id=path.name)
        for path in sorted(REAL_PAYLOADS.glob("*.json"))
        if path.name != "headers.json"
    ]


@pytest.mark.parametrize("path", _real_files())
def test_every_published_payload_parses_into_the_event_gitlab_meant(path: Path) -> None:
    described = json.loads((REAL_PAYLOADS / "headers.json").read_text())
    payload = json.loads(path.read_bytes())
    headers = described["example_request_headers_from_api_docs"] | {
        "X-Gitlab-Event": described["events"][payload["object_kind"]],
        "X-Gitlab-Token": SECRET,
    }
    GITLAB.verify(headers, path.read_bytes(), SECRET)
    assert GITLAB.delivery_id(headers) == headers["Idempotency-Key"]

    event = GITLAB.parse(headers, payload)
    assert isinstance(event, PushEvent)
    assert event.repository == payload["project"]["path_with_namespace"]
    assert event.deleted is ("deleted" in path.name)
    assert (event.tag is not None) is path.name.startswith("tag")
    assert (event.branch is not None) is not path.name.startswith("tag")
    if "subgroup" in path.name:
        assert event.repository.count("/") >= 2
    if event.deleted:
        assert (event.sha, event.changed_files) == (ZERO, None)
    else:
        assert event.sha == payload["checkout_sha"]
    if event.before == ZERO or payload["total_commits_count"] > len(payload["commits"]):
        assert event.changed_files is None
