"""Gitea and Forgejo webhooks: check X-Gitea-Signature (or X-Forgejo-Signature), then turn a push into
an event.

Payload fields follow Gitea's webhook documentation (https://docs.gitea.com/usage/repository/webhooks)
and its PushPayload (modules/structs/hook.go); Forgejo sends the same body with its own header names
beside Gitea's. What differs from GitHub, and is handled here:
- no `created`, `deleted` or `forced` in older versions: creation and deletion are read from the
  all-zeros `before` and `after`, and a forced push is never known (its files are those listed);
- `head_commit` is missing in older versions: the head is the listed commit whose id is `after`
  (Gitea lists commits newest first, GitHub oldest first, so a position would be wrong on one), and
  with none listed, `after` itself;
- no ping event exists: a new hook's "Test delivery" sends a push of the last commit;
- a branch or tag created or deleted also sends `create` or `delete` events, answered 200 and not
  built (the push event sent with them is what builds).

The status request follows Gitea's API (`POST /repos/{owner}/{repo}/statuses/{sha}`,
CreateStatusOption in its swagger at /api/swagger), which Forgejo keeps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ciserver.forges.base import (
    BadSignature,
    Fields,
    ForgeRequest,
    Ignored,
    MalformedPayload,
    PushEvent,
    StatusReport,
    WebhookEvent,
    delivery_header,
    files_changed,
    header,
    make_push,
    signs_body,
)
from ciserver.forges.github import repository_status_request
from ciserver.forges.refs import branch_and_tag, check_ref, check_sha, is_zero_sha
from ciserver.forges.scan import MAX_CANDIDATES, string_values

EVENT_HEADERS = ("X-Gitea-Event", "X-Forgejo-Event")
DELIVERY_HEADERS = ("X-Gitea-Delivery", "X-Forgejo-Delivery")
SIGNATURE_HEADERS = ("X-Forgejo-Signature", "X-Gitea-Signature")

# Without `total_commits` (older versions), a list this long may have been cut short: Gitea's action
# feed, which the payload's commits come from, keeps 5 commits by default (ui.FEED_MAX_COMMIT_NUM).
UNCOUNTED_COMMITS_CAP = 5

_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")

# Gitea's statuses are GitHub's (the same call and states, and `warning`), with longer descriptions.
MAX_STATUS_DESCRIPTION = 255


class GiteaForge:
    """Gitea and Forgejo (Codeberg included) repository, organisation and system webhooks."""

    name = "gitea"
    repository_field = "repository.full_name"
    default_api_url = None  # every instance is self-hosted (Codeberg's is https://codeberg.org/api/v1)
    # A status per job as well as the pipeline's, as on GitHub: Gitea lists each context of a commit
    # on its own line with its own link, and a branch protection rule names the contexts it requires.
    per_job_statuses = True

    def status_request(self, api_url: str, repository: str, token: str, report: StatusReport) -> ForgeRequest:
        """POST {api}/repos/{owner}/{repo}/statuses/{sha} with `Authorization: token ...`."""
        headers = {"Authorization": f"token {token}"}
        return repository_status_request(api_url, repository, headers, report, MAX_STATUS_DESCRIPTION)

    def status_already_set(self, code: int, body: str) -> bool:
        """Gitea accepts any state again: every refusal is one."""
        return False

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        """X-Gitea-Delivery (X-Forgejo-Delivery): a redelivery from the hook's history repeats it."""
        return delivery_header(headers, *DELIVERY_HEADERS)

    def repository_path(self, payload: Any) -> str | None:
        """repository.full_name ("owner/name")."""
        repository = Fields(payload).optional_child("repository")
        return None if repository is None else repository.text("full_name", allow_empty=False)

    def repository_candidates(self, body: bytes) -> list[str]:
        """The values of "full_name" keys in the raw body that look like a repository path.

        A user's `full_name` is their display name ("Gitea"), and the owner's comes before the
        repository's own: names without a "/" are left out so that they cannot crowd it out.
        """
        values = string_values(body, "full_name", limit=2 * MAX_CANDIDATES)
        return [value for value in values if "/" in value][:MAX_CANDIDATES]

    def is_ping(self, headers: Mapping[str, str]) -> bool:
        """Gitea has no ping: its "Test delivery" sends a push."""
        return False

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        """Check the hex HMAC-SHA256(secret, raw body), no prefix, in constant time.

        Forgejo sends X-Forgejo-Signature and X-Gitea-Signature with the same value; the first present
        is checked. Gitea sends an empty one for a hook that has no secret.
        """
        if not secret:
            raise BadSignature("X-Gitea-Signature: no webhook secret is configured for this repository")
        name, value = next(
            ((name, header(headers, name)) for name in SIGNATURE_HEADERS if header(headers, name)),
            ("X-Gitea-Signature", None),
        )
        if value is None:
            raise BadSignature(
                "X-Gitea-Signature: missing (set the hook's secret in Gitea to the project's secret)"
            )
        if _SIGNATURE.fullmatch(value.strip()) is None:
            raise BadSignature(f"{name}: expected 64 hexadecimal digits")
        if not signs_body(secret, body, value.strip()):
            raise BadSignature(f"{name}: does not match the body")

    def parse(self, headers: Mapping[str, str], payload: Any) -> WebhookEvent:
        """`push` means a push; `create`, `delete` and every other event are Ignored with the reason."""
        event = next((value for name in EVENT_HEADERS if (value := header(headers, name))), None)
        if event is None:
            raise MalformedPayload("X-Gitea-Event: missing")
        fields = Fields(payload)
        if event == "push":
            return self._push(fields)
        if event in ("create", "delete"):
            reason = f"event {event!r}: a branch or tag {event}d; its push event is what builds"
            return Ignored(repository=self.repository_path(payload), reason=reason)
        return Ignored(repository=self.repository_path(payload), reason=f"event {event[:100]!r} is not built")

    def _push(self, fields: Fields) -> PushEvent | Ignored:
        repository_fields = fields.child("repository")
        repository = repository_fields.text("full_name", allow_empty=False)
        ref = check_ref(fields.text("ref"), "ref")
        before = check_sha(fields.text("before"), "before")
        after = check_sha(fields.text("after"), "after")
        author = _pusher(fields)
        commits = fields.optional_children("commits")
        head = fields.optional_child("head_commit")
        total = fields.optional_count("total_commits")

        deleted = is_zero_sha(after)
        if deleted and is_zero_sha(before):
            raise MalformedPayload("before: all zeros, but a deleted ref must have pointed somewhere")

        sha, message = after, ""
        if not deleted:
            if head is None:
                head = next((c for c in commits if c.text("id").lower() == after), None)
            if head is not None:
                # For an annotated tag `after` is the tag object; head_commit is the commit it tags.
                sha = check_sha(head.text("id"), head.where("id"))
                message = head.text("message")

        branch, tag = branch_and_tag(ref)
        if branch is None and tag is None:
            return Ignored(repository=repository, reason=f"ref {ref!r} is neither a branch nor a tag")

        # Files are known for an update of an existing ref whose every commit is listed with its files.
        listed_all = total <= len(commits) if total is not None else len(commits) < UNCOUNTED_COMMITS_CAP
        lists_files = all(key in c.data for c in commits for key in ("added", "modified", "removed"))
        known = bool(commits) and not deleted and not is_zero_sha(before) and listed_all and lists_files
        return make_push(
            forge=self.name,
            repository=repository,
            default_branch=repository_fields.optional_text("default_branch") or None,
            ref=ref,
            branch=branch,
            tag=tag,
            before=before,
            sha=sha,
            message=message,
            author=author,
            changed_files=files_changed(commits) if known else None,
            deleted=deleted,
            forced=False,
        )


def _pusher(fields: Fields) -> str:
    """pusher.login (older versions: pusher.username), or "" when the payload names no pusher."""
    pusher = fields.optional_child("pusher")
    if pusher is None:
        return ""
    return pusher.optional_text("login") or pusher.optional_text("username") or ""


GITEA = GiteaForge()
