"""`ciserver push`'s webhook: what it reads from a real repository, and that each forge's own verifier
and parser (the server's) accept what it signs, as the push a forge would have sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ciserver.forges import get_forge
from ciserver.forges.base import BadSignature, PushEvent
from ciserver.push_webhook import PushError, default_branch_of, resolve, signed_push
from tests.support.git import commit, git, make_repo

SECRET = "a-webhook-secret-of-some-length"


def parsed(forge: str, name: str, body: bytes, headers: dict[str, str], secret: str = SECRET) -> PushEvent:
    """The delivery as the server takes it: verified on the raw body, then parsed."""
    target = get_forge(forge)
    target.verify(headers, body, secret)
    event = target.parse(headers, json.loads(body))
    assert isinstance(event, PushEvent), event
    return event


@pytest.mark.parametrize("forge", ["github", "gitlab", "gitea"])
def test_each_forge_verifies_and_parses_the_push_of_a_branch(tmp_path: Path, forge: str) -> None:
    sha = make_repo(tmp_path / "repo", {"README": "hi\n"}, branch="trunk")
    newer = commit(tmp_path / "repo", {"README": "more\n"}, "second\n\nwith a body")
    pushed = resolve(tmp_path / "repo", "trunk", None)
    assert (pushed.ref, pushed.sha, pushed.author) == ("refs/heads/trunk", newer, "Dev")
    body, headers = signed_push(forge, "group/sub/app", SECRET, "trunk", pushed, "alice")
    event = parsed(forge, "group/sub/app", body, headers)
    assert (event.repository, event.ref, event.branch, event.sha) == (
        "group/sub/app",
        "refs/heads/trunk",
        "trunk",
        newer,
    )
    assert event.message.startswith("second") and event.default_branch == "trunk"
    assert event.changed_files is None  # a new ref as far as the server knows: path rules exclude nothing
    assert sha != newer
    with pytest.raises(BadSignature):
        parsed(forge, "group/sub/app", body, headers, secret="another-secret-entirely")


def test_a_tag_resolves_to_its_commit_and_an_annotated_tag_keeps_its_own_object(tmp_path: Path) -> None:
    sha = make_repo(tmp_path / "repo", {"README": "hi\n"})
    git(tmp_path / "repo", "tag", "-a", "v1.0", "-m", "release")
    tag_object = git(tmp_path / "repo", "rev-parse", "v1.0")
    pushed = resolve(tmp_path / "repo", "v1.0", None)
    assert (pushed.ref, pushed.after, pushed.sha) == ("refs/tags/v1.0", tag_object, sha)
    for forge in ("github", "gitlab"):
        event = parsed(forge, "acme/app", *signed_push(forge, "acme/app", SECRET, "main", pushed, "bob"))
        assert (event.tag, event.branch, event.sha) == ("v1.0", None, sha)


def test_a_sha_given_is_checked_against_the_repository_and_a_missing_ref_is_named(tmp_path: Path) -> None:
    sha = make_repo(tmp_path / "repo", {"README": "hi\n"})
    assert resolve(tmp_path / "repo", "main", sha).sha == sha
    with pytest.raises(PushError, match=f"--sha: {'f' * 40} is not a commit of "):
        resolve(tmp_path / "repo", "main", "f" * 40)
    with pytest.raises(PushError, match="--ref: refs/heads/no-such-branch is not a branch or tag of "):
        resolve(tmp_path / "repo", "no-such-branch", None)
    with pytest.raises(PushError, match="--sha"):
        resolve(None, "main", None)
    remote = resolve(None, "main", "a" * 40)  # a repository elsewhere: the sha is taken as given
    assert (remote.ref, remote.sha) == ("refs/heads/main", "a" * 40)


def test_the_default_branch_is_what_the_repository_tells(tmp_path: Path) -> None:
    make_repo(tmp_path / "work", {"README": "hi\n"}, branch="trunk")
    assert default_branch_of(tmp_path / "work") is None  # a working copy's HEAD is only what is checked out
    git(tmp_path, "clone", "-q", "--bare", str(tmp_path / "work"), str(tmp_path / "bare.git"))
    assert default_branch_of(tmp_path / "bare.git") == "trunk"
    git(tmp_path, "clone", "-q", str(tmp_path / "bare.git"), str(tmp_path / "clone"))
    assert default_branch_of(tmp_path / "clone") == "trunk"
    make_repo(tmp_path / "plain", {"README": "hi\n"})
    assert default_branch_of(tmp_path / "plain") == "main"
