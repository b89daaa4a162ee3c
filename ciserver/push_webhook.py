"""A forge's push webhook made on this host: what `ciserver push` sends, so a build can be started
without a forge (a repository that is a local path, a first try, a script).

The body has the fields the forge documents and ciserver.forges reads, signed the way the project's
forge signs (GitHub: X-Hub-Signature-256; Gitea and Forgejo: X-Gitea-Signature; GitLab: the secret
token). `before` is all zeros, as for a new ref: the changed files are then unknown, so path rules
exclude nothing and the pipeline runs whole.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ZERO_SHA = "0" * 40


class PushError(Exception):
    """The push cannot be made; the message says why and what to give instead."""


@dataclass(frozen=True)
class Commit:
    """What the webhook tells of the pushed commit. `after` is what the ref points at: the commit, or
    an annotated tag's own object."""

    ref: str
    after: str
    sha: str
    message: str
    author: str
    email: str
    timestamp: str


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, LC_ALL="C", GIT_TERMINAL_PROMPT="0"),
    )
    if result.returncode != 0:
        raise PushError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "git failed")
    return result.stdout.strip()


def full_ref(repo: Path | None, ref: str) -> str:
    """`main` as refs/heads/main, or refs/tags/NAME when the repository has such a tag and no such
    branch; a full `refs/...` as given."""
    if ref.startswith("refs/"):
        return ref
    if repo is not None and not _exists(repo, f"refs/heads/{ref}") and _exists(repo, f"refs/tags/{ref}"):
        return f"refs/tags/{ref}"
    return f"refs/heads/{ref}"


def _exists(repo: Path, ref: str) -> bool:
    try:
        _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except PushError:
        return False
    return True


def resolve(repo: Path | None, ref: str, sha: str | None) -> Commit:
    """The commit to push: `sha` if given (the repository, when there is one, tells its message),
    else what `ref` points at in `repo`."""
    ref = full_ref(repo, ref)
    if repo is None:
        if sha is None:
            raise PushError("--sha: needed when the project's repository is not a local path (or --repo)")
        return Commit(ref, sha, sha, "", "", "", _now())
    try:
        after = sha or _git(repo, "rev-parse", "--verify", "--end-of-options", ref)
    except PushError:
        raise PushError(f"--ref: {ref} is not a branch or tag of {repo}") from None
    try:
        commit = _git(repo, "rev-parse", "--verify", "--end-of-options", f"{after}^{{commit}}")
    except PushError:
        raise PushError(f"--sha: {after} is not a commit of {repo}") from None
    fields = _git(repo, "show", "-s", "--format=%an%x00%ae%x00%aI%x00%B", "--end-of-options", commit)
    author, email, when, message = ([*fields.split("\x00", 3), "", "", ""])[:4]
    return Commit(ref, after, commit, message, author, email, when or _now())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def github_body(full_name: str, default_branch: str | None, commit: Commit, pusher: str) -> dict[str, Any]:
    """A push as GitHub (and Gitea, Forgejo) document it."""
    owner, _, name = full_name.rpartition("/")
    person = {"name": commit.author or pusher, "email": commit.email, "username": pusher}
    head = {
        "id": commit.sha,
        "tree_id": ZERO_SHA,
        "distinct": True,
        "message": commit.message,
        "timestamp": commit.timestamp,
        "author": person,
        "committer": person,
        "added": [],
        "removed": [],
        "modified": [],
    }
    return {
        "ref": commit.ref,
        "before": ZERO_SHA,
        "after": commit.after,
        "created": True,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "commits": [head],
        "total_commits": 1,
        "head_commit": head,
        "repository": {
            "name": name,
            "full_name": full_name,
            "owner": {"name": owner, "login": owner, "username": owner},
            "default_branch": default_branch,
        },
        "pusher": {"name": pusher, "login": pusher, "username": pusher, "email": ""},
        "sender": {"login": pusher, "username": pusher},
    }


def gitlab_body(path: str, default_branch: str | None, commit: Commit, pusher: str) -> dict[str, Any]:
    """A push (or tag push) as GitLab documents it."""
    namespace, _, name = path.rpartition("/")
    tag = commit.ref.startswith("refs/tags/")
    return {
        "object_kind": "tag_push" if tag else "push",
        "event_name": "tag_push" if tag else "push",
        "before": ZERO_SHA,
        "after": commit.after,
        "ref": commit.ref,
        "checkout_sha": commit.sha,
        "user_name": pusher,
        "user_username": pusher,
        "project": {
            "name": name,
            "namespace": namespace,
            "path_with_namespace": path,
            "default_branch": default_branch,
        },
        "commits": [
            {
                "id": commit.sha,
                "message": commit.message,
                "title": commit.message.split("\n", 1)[0],
                "timestamp": commit.timestamp,
                "author": {"name": commit.author or pusher, "email": commit.email},
                "added": [],
                "modified": [],
                "removed": [],
            }
        ],
        "total_commits_count": 1,
        "repository": {"name": name},
    }


def signed_push(
    forge: str, name: str, secret: str, default_branch: str | None, commit: Commit, pusher: str
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the push webhook `forge` would send for `commit`."""
    delivery = str(uuid.uuid4())
    if forge == "gitlab":
        body = json.dumps(gitlab_body(name, default_branch, commit, pusher)).encode()
        event = "Tag Push Hook" if commit.ref.startswith("refs/tags/") else "Push Hook"
        headers = {"X-Gitlab-Event": event, "X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": delivery}
    else:
        body = json.dumps(github_body(name, default_branch, commit, pusher)).encode()
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if forge == "github":
            headers = {
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": f"sha256={digest}",
            }
        elif forge == "gitea":
            headers = {"X-Gitea-Event": "push", "X-Gitea-Delivery": delivery, "X-Gitea-Signature": digest}
        else:
            raise PushError(f"forge: {forge!r} is not one `ciserver push` can sign for")
    return body, {"Content-Type": "application/json", "User-Agent": "ciserver-push", **headers}


def default_branch_of(repo: Path) -> str | None:
    """The repository's default branch as its forge would name it: origin's HEAD in a clone, HEAD in a
    bare repository, else `main` or `master` if it has one (a working copy's HEAD is only the branch
    checked out). None when none of these tells: the server then takes `main`."""
    candidates = ["refs/remotes/origin/HEAD"]
    if _git(repo, "rev-parse", "--is-bare-repository") == "true":
        candidates.append("HEAD")
    for name in candidates:
        try:
            return _git(repo, "symbolic-ref", "--quiet", name).split("/", 2 if name == "HEAD" else 3)[-1]
        except PushError:
            continue
    return next((b for b in ("main", "master") if _exists(repo, f"refs/heads/{b}")), None)
