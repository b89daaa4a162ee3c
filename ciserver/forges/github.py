"""GitHub webhooks: check X-Hub-Signature-256, then turn a `push` or `ping` into an event; and the
commit status a build sets on GitHub.

Payload fields follow GitHub's "push" and "ping" webhook documentation
(https://docs.github.com/en/webhooks/webhook-events-and-payloads); the status request follows
"Create a commit status" (https://docs.github.com/en/rest/commits/statuses).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ciserver.forges.base import (
    BadSignature,
    Fields,
    ForgeRequest,
    Ignored,
    MalformedPayload,
    Ping,
    PushEvent,
    StatusReport,
    StatusState,
    WebhookEvent,
    capped,
    delivery_header,
    files_changed,
    header,
    make_push,
    signs_body,
)
from ciserver.forges.refs import branch_and_tag, check_ref, check_sha, is_zero_sha
from ciserver.forges.scan import string_values

EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
SIGNATURE_HEADER = "X-Hub-Signature-256"

# GitHub documents both caps: past them the lists are cut short, so the changed files are unknowable.
MAX_LISTED_COMMITS = 2048
MAX_FILES_PER_COMMIT = 3000

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")

# GitHub's statuses have four states: a running build is still pending, and a canceled one is an
# error whose description says it was canceled; a skipped build or job does not block a merge.
STATUS_STATES = {
    StatusState.pending: "pending",
    StatusState.running: "pending",
    StatusState.success: "success",
    StatusState.failure: "failure",
    StatusState.error: "error",
    StatusState.canceled: "error",
    StatusState.skipped: "success",
}
MAX_STATUS_DESCRIPTION = 140  # longer descriptions are refused with 422


def repository_status_request(
    api_url: str, repository: str, headers: dict[str, str], report: StatusReport, max_description: int
) -> ForgeRequest:
    """GitHub's commit status call, which Gitea and Forgejo copy: POST
    {api}/repos/{owner}/{repo}/statuses/{sha} with state, target_url, description and context."""
    owner, name = (quote(part, safe="") for part in repository.split("/", 1))
    return ForgeRequest(
        "POST",
        f"{api_url.rstrip('/')}/repos/{owner}/{name}/statuses/{report.sha}",
        headers=headers,
        json={
            "state": STATUS_STATES[report.state],
            "target_url": report.target_url,
            "description": capped(report.description, max_description),
            "context": report.context,
        },
    )


class GitHubForge:
    """GitHub (and GitHub Enterprise Server) repository webhooks."""

    name = "github"
    repository_field = "repository.full_name"
    default_api_url = "https://api.github.com"
    # A status per job as well as the pipeline's: GitHub lists every context as its own check on a
    # pull request, with its own link, so the failing job is one click away; branch protection
    # requires the pipeline's `ciserver`, which stays the same whatever jobs a commit has.
    per_job_statuses = True

    def status_request(self, api_url: str, repository: str, token: str, report: StatusReport) -> ForgeRequest:
        """POST {api}/repos/{owner}/{repo}/statuses/{sha} with a bearer token."""
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        return repository_status_request(api_url, repository, headers, report, MAX_STATUS_DESCRIPTION)

    def status_already_set(self, code: int, body: str) -> bool:
        """GitHub accepts any state again: every refusal is one."""
        return False

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        """X-GitHub-Delivery: a manual redelivery repeats it."""
        return delivery_header(headers, DELIVERY_HEADER)

    def repository_path(self, payload: Any) -> str | None:
        """repository.full_name ("owner/name"); None for an organisation or app hook's ping."""
        repository = Fields(payload).optional_child("repository")
        return None if repository is None else repository.text("full_name", allow_empty=False)

    def repository_candidates(self, body: bytes) -> list[str]:
        """The values of "full_name" keys in the raw body."""
        return string_values(body, "full_name")

    def is_ping(self, headers: Mapping[str, str]) -> bool:
        """X-GitHub-Event: ping (an organisation's ping names no repository)."""
        return header(headers, EVENT_HEADER) == "ping"

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        """Check "sha256=" + hex HMAC-SHA256(secret, raw body) in constant time."""
        if not secret:
            # An empty key signs everything anyone sends: treat it as no proof at all.
            raise BadSignature(f"{SIGNATURE_HEADER}: no webhook secret is configured for this repository")
        value = header(headers, SIGNATURE_HEADER)
        if value is None:
            raise BadSignature(f"{SIGNATURE_HEADER}: missing")
        match = _SIGNATURE.fullmatch(value.strip())
        if match is None:
            raise BadSignature(f"{SIGNATURE_HEADER}: expected 'sha256=' followed by 64 hexadecimal digits")
        if not signs_body(secret, body, match.group(1)):
            raise BadSignature(f"{SIGNATURE_HEADER}: does not match the body")

    def parse(self, headers: Mapping[str, str], payload: Any) -> WebhookEvent:
        """`ping` and `push` mean something; every other event is Ignored with the reason."""
        event = header(headers, EVENT_HEADER)
        if event is None:
            raise MalformedPayload(f"{EVENT_HEADER}: missing")
        fields = Fields(payload)
        if event == "ping":
            return Ping(repository=self.repository_path(payload))
        if event == "push":
            return self._push(fields)
        return Ignored(repository=self.repository_path(payload), reason=f"event {event[:100]!r} is not built")

    def _push(self, fields: Fields) -> PushEvent | Ignored:
        repository = fields.child("repository").text("full_name", allow_empty=False)
        ref = check_ref(fields.text("ref"), "ref")
        before = check_sha(fields.text("before"), "before")
        after = check_sha(fields.text("after"), "after")
        created = fields.flag("created")
        deleted = fields.flag("deleted")
        forced = fields.flag("forced")
        author = fields.child("pusher").text("name")
        commits = fields.children("commits")
        head = fields.optional_child("head_commit")
        listed_files = files_changed(commits, MAX_FILES_PER_COMMIT)

        if deleted != is_zero_sha(after):
            raise MalformedPayload(f"deleted: is {str(deleted).lower()}, but after is {after}")
        if deleted and is_zero_sha(before):
            raise MalformedPayload("before: all zeros, but a deleted ref must have pointed somewhere")

        sha, message = after, ""
        if head is not None and not deleted:
            # For an annotated tag `after` is the tag object; head_commit is the commit it tags,
            # the one to check out and to report a status on.
            sha = check_sha(head.text("id"), "head_commit.id")
            message = head.text("message")

        branch, tag = branch_and_tag(ref)
        if branch is None and tag is None:
            return Ignored(repository=repository, reason=f"ref {ref!r} is neither a branch nor a tag")

        # Files are known only for an update of an existing ref whose every commit is listed.
        unknowable = (
            deleted
            or created
            or forced
            or is_zero_sha(before)
            or not commits
            or len(commits) >= MAX_LISTED_COMMITS
        )
        return make_push(
            forge=self.name,
            repository=repository,
            default_branch=fields.child("repository").optional_text("default_branch"),
            ref=ref,
            branch=branch,
            tag=tag,
            before=before,
            sha=sha,
            message=message,
            author=author,
            changed_files=None if unknowable else listed_files,
            deleted=deleted,
            forced=forced,
        )


GITHUB = GitHubForge()
