"""GitHub webhooks: only a body signed with the repository's secret is trusted, and a push becomes
exactly one PushEvent (or a clear 422 naming the field that is wrong)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from ciserver.forges import FORGES, get_forge
from ciserver.forges.base import BadSignature, Ignored, MalformedPayload, Ping, PushEvent
from ciserver.forges.github import GITHUB
from tests.support.forge_fuzz import json_values, mutated_fixtures

FIXTURES = Path(__file__).parent / "fixtures" / "github"
REAL_PAYLOADS = (
    Path(os.environ.get("REAL_PAYLOADS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "payloads")
    / "github"
)
SECRET = "It's a Secret to Everybody"
ZERO = "0" * 40


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def push(payload: dict[str, Any], event: str = "push") -> Any:
    return GITHUB.parse({"X-GitHub-Event": event}, payload)


# --- the registry --------------------------------------------------------------------------------


def test_github_is_registered_under_its_name() -> None:
    assert get_forge("github") is GITHUB
    assert FORGES["github"].name == "github"


def test_an_unknown_forge_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="bitbucket"):
        get_forge("bitbucket")


# --- verify --------------------------------------------------------------------------------------


def test_a_body_signed_with_the_secret_is_accepted() -> None:
    body = b'{"zen": "Design for failure."}'
    GITHUB.verify({"X-Hub-Signature-256": sign(body)}, body, SECRET)


def test_a_signature_over_a_different_body_is_refused() -> None:
    with pytest.raises(BadSignature, match=r"^X-Hub-Signature-256: does not match the body$") as caught:
        GITHUB.verify({"X-Hub-Signature-256": sign(b'{"a": 1}')}, b'{"a": 2}', SECRET)
    assert type(caught.value) is BadSignature


def test_a_signature_made_with_another_secret_is_refused() -> None:
    body = b"{}"
    with pytest.raises(BadSignature, match="does not match"):
        GITHUB.verify({"X-Hub-Signature-256": sign(body, "another secret")}, body, SECRET)


def test_a_missing_signature_is_refused_naming_the_header() -> None:
    with pytest.raises(BadSignature, match=r"^X-Hub-Signature-256: missing$"):
        GITHUB.verify({"X-GitHub-Event": "push"}, b"{}", SECRET)


def test_the_legacy_sha1_signature_alone_is_not_enough() -> None:
    body = b"{}"
    legacy = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    with pytest.raises(BadSignature, match="X-Hub-Signature-256: missing"):
        GITHUB.verify({"X-Hub-Signature": legacy}, body, SECRET)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda good: good.replace("sha256=", "sha1="),
        lambda good: good.replace("sha256=", "SHA256="),
        lambda good: good.removeprefix("sha256="),
        lambda good: good[:-2],
        lambda good: good + "00",
        lambda good: good[:-1] + "g",
        lambda good: "sha256=",
        lambda good: "",
        lambda good: good.replace("sha256=", "sha256=\u0660"),
    ],
    ids=[
        "sha1 prefix",
        "upper prefix",
        "no prefix",
        "truncated",
        "too long",
        "non-hex",
        "empty",
        "blank",
        "arabic",
    ],
)
def test_a_malformed_signature_is_refused_naming_the_header(mangle: Any) -> None:
    body = b"{}"
    with pytest.raises(BadSignature, match=r"^X-Hub-Signature-256: "):
        GITHUB.verify({"X-Hub-Signature-256": mangle(sign(body))}, body, SECRET)


def test_a_signature_in_upper_case_hex_is_accepted() -> None:
    body = b"{}"
    good = sign(body)
    GITHUB.verify({"X-Hub-Signature-256": "sha256=" + good.removeprefix("sha256=").upper()}, body, SECRET)


def test_without_a_configured_secret_every_delivery_is_refused() -> None:
    body = b"{}"
    with pytest.raises(BadSignature, match="no webhook secret is configured"):
        GITHUB.verify({"X-Hub-Signature-256": sign(body, "")}, body, "")


def test_header_names_are_matched_whatever_their_case() -> None:
    body = b"{}"
    GITHUB.verify({"x-hub-signature-256": sign(body)}, body, SECRET)
    GITHUB.verify(Headers({"X-HUB-SIGNATURE-256": sign(body)}), body, SECRET)
    assert isinstance(GITHUB.parse({"x-github-event": "ping"}, load("ping.json")), Ping)


def test_a_non_ascii_secret_signs_its_utf8_bytes() -> None:
    body = b"{}"
    GITHUB.verify({"X-Hub-Signature-256": sign(body, "s\u00e9cret")}, body, "s\u00e9cret")


# --- delivery id and repository ------------------------------------------------------------------


def test_the_delivery_id_is_x_github_delivery() -> None:
    headers = Headers({"x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    assert GITHUB.delivery_id(headers) == "72d3162e-cc78-11e3-81ab-4c9367dc0958"


@pytest.mark.parametrize("value", [None, "", "   ", "x" * 201, "id\nwith newline", "caf\u00e9"])
def test_a_missing_or_implausible_delivery_id_is_none(value: str | None) -> None:
    headers = {} if value is None else {"X-GitHub-Delivery": value}
    assert GITHUB.delivery_id(headers) is None


def test_the_repository_is_owner_slash_name() -> None:
    assert GITHUB.repository_path(load("push.json")) == "acme/webapp"


def test_an_organisation_ping_names_no_repository() -> None:
    assert GITHUB.repository_path(load("ping_organization.json")) is None


def test_a_repository_of_the_wrong_type_is_malformed_not_absent() -> None:
    with pytest.raises(MalformedPayload, match=r"^repository.full_name: expected a string, got a number$"):
        GITHUB.repository_path({"repository": {"full_name": 3}})


# --- parse: what each delivery means -------------------------------------------------------------


def test_a_push_to_a_branch_becomes_a_push_event_with_its_changed_files() -> None:
    payload = load("push.json")
    event = push(payload)
    assert event == PushEvent(
        forge="github",
        repository="acme/webapp",
        ref="refs/heads/main",
        branch="main",
        tag=None,
        before=payload["before"],
        sha=payload["after"],
        message="Fix the basket total; handle $ & | ; `quotes`",
        author="ada-l",
        changed_files=["tests/test_basket.py", "web/app.py", "web/basket.html", "web/old_total.py"],
        deleted=False,
        forced=False,
        default_branch="main",
    )


def test_a_forced_push_has_unknowable_changed_files() -> None:
    event = push(load("push_forced.json"))
    assert isinstance(event, PushEvent)
    assert event.forced is True
    assert event.changed_files is None
    assert event.branch == "feature/basket"


def test_a_tag_push_names_the_tag_and_no_branch() -> None:
    payload = load("push_tag.json")
    event = push(payload)
    assert isinstance(event, PushEvent)
    assert (event.ref, event.tag, event.branch) == ("refs/tags/v1.0.0", "v1.0.0", None)
    assert event.sha == payload["after"]
    assert event.changed_files is None


def test_an_annotated_tag_builds_the_commit_it_points_at() -> None:
    payload = load("push_tag_annotated.json")
    event = push(payload)
    assert isinstance(event, PushEvent)
    assert payload["after"] != payload["head_commit"]["id"]
    assert event.sha == payload["head_commit"]["id"]


def test_a_branch_deletion_is_a_deleted_push_at_the_zero_sha() -> None:
    event = push(load("push_branch_deleted.json"))
    assert isinstance(event, PushEvent)
    assert event.deleted is True
    assert event.sha == ZERO
    assert (event.message, event.changed_files) == ("", None)


def test_a_new_branch_without_commits_builds_its_head_commit() -> None:
    payload = load("push_new_branch_no_commits.json")
    event = push(payload)
    assert isinstance(event, PushEvent)
    assert event.branch == "release/2024.11"
    assert event.before == ZERO
    assert event.sha == payload["head_commit"]["id"]
    assert event.message == payload["head_commit"]["message"]
    assert event.changed_files is None


def test_a_ping_names_its_repository() -> None:
    assert push(load("ping.json"), "ping") == Ping(repository="acme/webapp")
    assert push(load("ping_organization.json"), "ping") == Ping(repository=None)


@pytest.mark.parametrize("event", ["issues", "pull_request", "create", "delete", "Push", ""])
def test_an_event_other_than_push_or_ping_is_ignored_with_the_reason(event: str) -> None:
    assert push(load("push.json"), event) == Ignored(
        repository="acme/webapp", reason=f"event {event!r} is not built"
    )


def test_a_delivery_without_an_event_header_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match=r"^X-GitHub-Event: missing$"):
        GITHUB.parse({}, load("push.json"))


def test_a_push_to_a_ref_outside_branches_and_tags_is_ignored() -> None:
    payload = load("push.json") | {"ref": "refs/pull/12/head"}
    assert push(payload) == Ignored(
        repository="acme/webapp", reason="ref 'refs/pull/12/head' is neither a branch nor a tag"
    )


@pytest.mark.parametrize(
    "ref", ["refs/heads/--upload-pack=touch /tmp/pwned", "refs/heads/../../etc", "refs/heads/x..y", "main"]
)
def test_a_ref_git_would_refuse_or_read_as_an_option_is_malformed(ref: str) -> None:
    with pytest.raises(MalformedPayload, match=r"^ref: "):
        push(load("push.json") | {"ref": ref})


@pytest.mark.parametrize("branch", ["fix-$HOME", "a;reboot", "a&&b||c", "`id`", "$(id)", "x'y\"z"])
def test_shell_metacharacters_in_a_branch_are_carried_through_unchanged(branch: str) -> None:
    event = push(load("push.json") | {"ref": f"refs/heads/{branch}"})
    assert isinstance(event, PushEvent)
    assert (event.ref, event.branch) == (f"refs/heads/{branch}", branch)


def test_an_upper_case_sha_is_normalised() -> None:
    payload = load("push.json")
    payload["before"] = payload["before"].upper()
    payload["head_commit"]["id"] = payload["head_commit"]["id"].upper()
    event = push(payload)
    assert isinstance(event, PushEvent)
    assert event.before == event.before.lower()
    assert event.sha == load("push.json")["after"]


def _delete(payload: dict[str, Any], path: list[str | int]) -> None:
    parent: Any = payload
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (["repository", "full_name"], "repository.full_name: missing"),
        (["repository"], "repository: missing"),
        (["ref"], "ref: missing"),
        (["after"], "after: missing"),
        (["forced"], "forced: missing"),
        (["pusher", "name"], "pusher.name: missing"),
        (["commits"], "commits: missing"),
        (["commits", 1, "removed"], "commits[1].removed: missing"),
        (["head_commit", "message"], "head_commit.message: missing"),
    ],
)
def test_a_missing_field_is_named_by_its_dotted_path(path: list[str | int], message: str) -> None:
    payload = load("push.json")
    _delete(payload, path)
    with pytest.raises(MalformedPayload) as caught:
        push(payload)
    assert caught.value.message == message
    assert type(caught.value) is MalformedPayload


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"forced": "yes"}, "forced: expected a boolean, got a string"),
        ({"after": 7}, "after: expected a string, got a number"),
        ({"commits": {}}, "commits: expected an array, got an object"),
        ({"commits": [None]}, "commits[0]: expected an object, got null"),
        ({"pusher": "ada"}, "pusher: expected an object, got a string"),
        ({"head_commit": []}, "head_commit: expected an object, got an array"),
        ({"repository": {"full_name": ""}}, "repository.full_name: must not be empty"),
    ],
)
def test_a_wrongly_typed_field_is_named_with_what_was_expected(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MalformedPayload) as caught:
        push(load("push.json") | change)
    assert caught.value.message == message


def test_a_file_list_with_a_number_in_it_is_malformed() -> None:
    payload = load("push.json")
    payload["commits"][0]["added"].append(12)
    with pytest.raises(
        MalformedPayload, match=r"^commits\[0\]\.added\[1\]: expected a string, got a number$"
    ):
        push(payload)


@pytest.mark.parametrize("payload", [None, [], "push", 3, True])
def test_a_payload_that_is_not_an_object_is_malformed(payload: Any) -> None:
    with pytest.raises(MalformedPayload, match=r"^body: expected an object"):
        push(payload)


def test_a_deleted_flag_that_contradicts_after_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match=r"^deleted: "):
        push(load("push.json") | {"deleted": True})
    with pytest.raises(MalformedPayload, match=r"^deleted: "):
        push(load("push_branch_deleted.json") | {"deleted": False})


def test_a_zero_sha_is_allowed_only_for_a_deletion() -> None:
    payload = load("push.json")
    payload["head_commit"]["id"] = ZERO
    with pytest.raises(MalformedPayload, match="all zeros"):
        push(payload)


def test_text_no_git_object_can_hold_is_malformed() -> None:
    payload = load("push.json")
    payload["head_commit"]["message"] = "fine\x00not"
    with pytest.raises(MalformedPayload, match=r"^head_commit\.message: contains a NUL"):
        push(payload)
    payload["head_commit"]["message"] = "lone \ud800 surrogate"
    with pytest.raises(MalformedPayload, match=r"^head_commit\.message: is not valid Unicode"):
        push(payload)


def test_as_many_commits_as_github_lists_make_the_changed_files_unknowable() -> None:
    payload = load("push.json")
    payload["commits"] = payload["commits"][:1] * 2048
    event = push(payload)
    assert isinstance(event, PushEvent)
    assert event.changed_files is None
    payload["commits"] = payload["commits"][:2047]
    assert push(payload).changed_files == ["web/app.py", "web/basket.html"]


def test_a_commit_listing_as_many_files_as_github_reports_makes_them_unknowable() -> None:
    payload = load("push.json")
    payload["commits"][0]["modified"] = [f"gen/{n}.py" for n in range(3000)]
    assert push(payload).changed_files is None


def test_a_push_that_lists_no_commits_has_unknowable_changed_files() -> None:
    payload = load("push.json") | {"commits": []}
    assert push(payload).changed_files is None


# --- properties ----------------------------------------------------------------------------------

EVENTS = st.sampled_from(["push", "ping", "issues"]) | st.text(max_size=10)
INTERESTING = [
    ZERO,
    "A" * 40,
    "refs/heads/..",
    "refs/heads/-x",
    "refs/tags/v1",
    "refs/pull/1/head",
    "",
    "\x00",
    "\ud800",
]
JSON = json_values(list(INTERESTING))
mutated = mutated_fixtures(FIXTURES, JSON)


def _parse_only_raises_malformed(event: str, payload: Any) -> None:
    try:
        result = GITHUB.parse({"X-GitHub-Event": event}, payload)
    except MalformedPayload as exc:
        assert type(exc) is MalformedPayload
        assert exc.message
        return
    assert isinstance(result, PushEvent | Ping | Ignored)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(event=EVENTS, payload=JSON)
def test_no_json_value_makes_parse_raise_anything_but_malformed_payload(event: str, payload: Any) -> None:
    _parse_only_raises_malformed(event, payload)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(event=st.sampled_from(["push", "ping"]), payload=mutated)
def test_no_damage_to_a_real_shape_makes_parse_raise_anything_but_malformed_payload(
    event: str, payload: Any
) -> None:
    _parse_only_raises_malformed(event, payload)


SIGNATURES = st.text() | st.from_regex(r"sha256=[0-9a-fA-F]{60,68}", fullmatch=True)


@settings(max_examples=300)
@given(
    body=st.binary(),
    secret=st.text(),
    headers=st.dictionaries(
        st.sampled_from(["X-Hub-Signature-256", "x-hub-signature-256", "X-Other"]), SIGNATURES
    ),
)
def test_random_bodies_and_headers_make_verify_raise_only_bad_signature(
    body: bytes, secret: str, headers: dict[str, str]
) -> None:
    with pytest.raises(BadSignature) as caught:
        GITHUB.verify(headers, body, secret)
    assert type(caught.value) is BadSignature


@given(body=st.binary(), secret=st.text(min_size=1))
def test_a_correct_signature_verifies_for_any_body_and_secret(body: bytes, secret: str) -> None:
    GITHUB.verify({"X-Hub-Signature-256": sign(body, secret)}, body, secret)


# --- published payloads (not redistributed: read from REAL_PAYLOADS_DIR when present) ------------


def _real_files() -> list[Any]:
    if not REAL_PAYLOADS.is_dir():
        reason = f"published GitHub payloads not present at {REAL_PAYLOADS} (set REAL_PAYLOADS_DIR)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [
        pytest.param(path, id=path.name)
        for path in sorted(REAL_PAYLOADS.glob("*.json"))
        if path.name != "headers.json"
    ]


def _documented_headers() -> dict[str, str]:
    described = json.loads((REAL_PAYLOADS / "headers.json").read_text())
    return {entry["name"]: entry["example"] for entry in described["headers"] if entry["example"]}


@pytest.mark.parametrize("path", _real_files())
def test_every_published_payload_parses_into_the_event_github_meant(path: Path) -> None:
    body = path.read_bytes()
    payload = json.loads(body)
    is_ping = path.name.startswith("ping")
    headers = _documented_headers() | {"X-GitHub-Event": "ping" if is_ping else "push"}
    headers["X-Hub-Signature-256"] = sign(body)
    GITHUB.verify(headers, body, SECRET)
    assert GITHUB.delivery_id(headers) == headers["X-GitHub-Delivery"]

    event = GITHUB.parse(headers, payload)
    if is_ping:
        assert event == Ping(repository=payload.get("repository", {}).get("full_name"))
        return
    assert isinstance(event, PushEvent)
    assert event.repository == payload["repository"]["full_name"]
    assert event.deleted is ("deleted" in path.name)
    assert (event.tag is not None) is ("tag" in path.name)
    assert (event.branch is not None) is ("tag" not in path.name)
    assert event.forced is ("forced" in path.name)
    if event.deleted:
        assert (event.sha, event.changed_files) == (ZERO, None)
    else:
        assert event.sha == payload["head_commit"]["id"]
        assert event.message == payload["head_commit"]["message"]
    if "new_branch" in path.name or event.forced:
        assert event.changed_files is None


def test_the_published_signed_ping_verifies_with_its_known_secret() -> None:
    path = REAL_PAYLOADS / "ping_signed.json"
    if not path.is_file():
        pytest.skip(f"published GitHub payloads not present at {REAL_PAYLOADS} (set REAL_PAYLOADS_DIR)")
    known = json.loads((REAL_PAYLOADS / "headers.json").read_text())["known_answer"]
    body = path.read_bytes()
    GITHUB.verify({"X-Hub-Signature-256": known["X-Hub-Signature-256"]}, body, known["secret"])
    with pytest.raises(BadSignature):
        GITHUB.verify({"X-Hub-Signature-256": known["X-Hub-Signature-256"]}, body + b"\n", known["secret"])


def test_too_many_or_too_long_changed_paths_make_the_changed_files_unknowable() -> None:
    from ciserver.forges.base import MAX_CHANGED_FILES, MAX_CHANGED_PATH_BYTES, Fields, files_changed

    def commit(paths: list[str]) -> Fields:
        return Fields({"added": paths, "modified": [], "removed": []})

    assert files_changed([commit(["a", "b"])]) == ["a", "b"]
    assert files_changed([commit([f"f{i}" for i in range(MAX_CHANGED_FILES + 1)])]) is None
    assert files_changed([commit(["ok", "d/" * (MAX_CHANGED_PATH_BYTES // 2 + 1)])]) is None
