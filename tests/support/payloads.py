"""Forge webhooks as GitHub and GitLab send them: push payloads with their documented fields, and the
headers that sign or authenticate them."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

ZERO_SHA = "0" * 40
WEBHOOK_SECRET = "s3cret-s3cret-s3cret"  # registration asks for at least 16 characters


def github_push_body(
    full_name: str,
    sha: str,
    *,
    ref: str = "refs/heads/main",
    message: str = "a commit",
    before: str = ZERO_SHA,
) -> bytes:
    """A push payload with the fields GitHub documents for the push event."""
    owner, name = full_name.split("/", 1)
    head = {
        "id": sha,
        "tree_id": "f" * 40,
        "distinct": True,
        "message": message,
        "timestamp": "2026-11-25T10:20:30Z",
        "url": f"https://github.com/{full_name}/commit/{sha}",
        "author": {"name": "Dev", "email": "dev@example.org", "username": "dev"},
        "committer": {"name": "Dev", "email": "dev@example.org", "username": "dev"},
        "added": ["pipelines.yml"],
        "removed": [],
        "modified": [],
    }
    deleted = sha == ZERO_SHA
    payload = {
        "ref": ref,
        "before": before,
        "after": sha,
        "created": before == ZERO_SHA,
        "deleted": deleted,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{full_name}/compare/{before[:12]}...{sha[:12]}",
        "commits": [] if deleted else [head],
        "head_commit": None if deleted else head,
        "repository": {
            "id": 1296269,
            "name": name,
            "full_name": full_name,
            "private": False,
            "owner": {"name": owner, "login": owner, "id": 1, "type": "User"},
            "clone_url": f"https://github.com/{full_name}.git",
            "default_branch": "main",
        },
        "pusher": {"name": "dev", "email": "dev@example.org"},
        "sender": {"login": "dev", "id": 1, "type": "User"},
    }
    return json.dumps(payload).encode()


def github_headers(
    body: bytes, secret: str, *, event: str = "push", delivery: str | None = None
) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
        "User-Agent": "GitHub-Hookshot/test",
    }


def gitlab_push_body(
    path: str, sha: str, *, ref: str = "refs/heads/main", message: str = "a commit"
) -> bytes:
    """A push payload with the fields GitLab documents for push events."""
    namespace, name = path.rsplit("/", 1)
    payload = {
        "object_kind": "push",
        "event_name": "push",
        "before": ZERO_SHA,
        "after": sha,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": sha,
        "user_id": 4,
        "user_name": "Dev",
        "user_username": "dev",
        "project_id": 15,
        "project": {
            "id": 15,
            "name": name,
            "namespace": namespace,
            "path_with_namespace": path,
            "default_branch": "main",
            "git_http_url": f"http://gitlab.example.com/{path}.git",
            "git_ssh_url": f"git@gitlab.example.com:{path}.git",
        },
        "commits": [
            {
                "id": sha,
                "message": message,
                "title": message,
                "timestamp": "2026-11-25T10:20:30+00:00",
                "url": f"http://gitlab.example.com/{path}/-/commit/{sha}",
                "author": {"name": "Dev", "email": "dev@example.org"},
                "added": ["pipelines.yml"],
                "modified": [],
                "removed": [],
            }
        ],
        "total_commits_count": 1,
        "repository": {"name": name, "git_http_url": f"http://gitlab.example.com/{path}.git"},
    }
    return json.dumps(payload).encode()


def gitlab_headers(token: str, *, event: str = "Push Hook", delivery: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": event,
        "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": delivery or str(uuid.uuid4()),
    }
