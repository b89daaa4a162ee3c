"""GitLab webhooks: check X-Gitlab-Token, then turn a push or tag push into an event; and the commit
status a build sets on GitLab.

Payload fields follow GitLab's "Push events" and "Tag events" documentation
(https://docs.gitlab.com/user/project/integrations/webhook_events/); the status request follows
"Set the pipeline status of a commit" (https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ciserver.forges.base import (
    BadSignature,
    Fields,
    ForgeRequest,
    Ignored,
    MalformedPayload,
    PushEvent,
    StatusReport,
    StatusState,
    WebhookEvent,
    capped,
    delivery_header,
    files_changed,
    header,
    make_push,
)
from ciserver.forges.refs import branch_and_tag, check_ref, check_sha, is_zero_sha
from ciserver.forges.scan import string_values

EVENT_HEADER = "X-Gitlab-Event"
TOKEN_HEADER = "X-Gitlab-Token"
# Idempotency-Key (GitLab 17.4+) survives a retry of the same delivery; X-Gitlab-Event-UUID
# is generated anew each time a hook is executed, so it only identifies older instances' deliveries.
DELIVERY_HEADERS = ("Idempotency-Key", "X-Gitlab-Event-UUID")

PUSH_HOOKS = frozenset({"Push Hook", "Tag Push Hook"})
PUSH_KINDS = frozenset({"push", "tag_push"})
# A system hook carries no event of its own in the header: the payload's object_kind says what it is.
SYSTEM_HOOK = "System Hook"

# GitLab has states of its own for a running, canceled and skipped pipeline, and no `error`.
STATUS_STATES = {
    StatusState.pending: "pending",
    StatusState.running: "running",
    StatusState.success: "success",
    StatusState.failure: "failed",
    StatusState.error: "failed",
    StatusState.canceled: "canceled",
    StatusState.skipped: "skipped",
}
MAX_STATUS_DESCRIPTION = 255  # the column GitLab keeps it in


class GitLabForge:
    """GitLab (gitlab.com or self-managed) project, group and system webhooks."""

    name = "gitlab"
    repository_field = "project.path_with_namespace"
    default_api_url = "https://gitlab.com/api/v4"
    # One status, the pipeline's: GitLab turns each status name into a job of an external pipeline
    # whose status it derives from all of them, with no way to say a job may fail; a job that failed
    # but is allowed to would turn that pipeline red. The build's page behind the link has the jobs.
    per_job_statuses = False

    def status_request(self, api_url: str, repository: str, token: str, report: StatusReport) -> ForgeRequest:
        """POST {api}/projects/{url-encoded path}/statuses/{sha} with a PRIVATE-TOKEN."""
        body = {
            "state": STATUS_STATES[report.state],
            "ref": report.ref.removeprefix("refs/heads/").removeprefix("refs/tags/"),
            "name": report.context,
            "target_url": report.target_url,
            "description": capped(report.description, MAX_STATUS_DESCRIPTION),
        }
        return ForgeRequest(
            "POST",
            f"{api_url.rstrip('/')}/projects/{quote(repository, safe='')}/statuses/{report.sha}",
            headers={"PRIVATE-TOKEN": token},
            json=body,
        )

    def status_already_set(self, code: int, body: str) -> bool:
        """GitLab refuses a state a status already has ("Cannot transition status via :run from
        :running") with 400: the state wanted is the one shown."""
        return code == 400 and "Cannot transition status" in body

    def delivery_id(self, headers: Mapping[str, str]) -> str | None:
        """Idempotency-Key, else X-Gitlab-Event-UUID."""
        return delivery_header(headers, *DELIVERY_HEADERS)

    def repository_path(self, payload: Any) -> str | None:
        """project.path_with_namespace: "group/project", with any subgroups ("a/b/c")."""
        project = Fields(payload).optional_child("project")
        return None if project is None else project.text("path_with_namespace", allow_empty=False)

    def repository_candidates(self, body: bytes) -> list[str]:
        """The values of "path_with_namespace" keys in the raw body."""
        return string_values(body, "path_with_namespace")

    def is_ping(self, headers: Mapping[str, str]) -> bool:
        """GitLab has no ping: its "Test" button sends a real push event."""
        return False

    def verify(self, headers: Mapping[str, str], body: bytes, secret: str) -> None:
        """Check that X-Gitlab-Token is the secret itself (GitLab sends no HMAC), in constant time."""
        if not secret:
            # An empty secret would match a delivery that sends no token at all.
            raise BadSignature(f"{TOKEN_HEADER}: no webhook secret is configured for this repository")
        token = header(headers, TOKEN_HEADER)
        if token is None:
            raise BadSignature(f"{TOKEN_HEADER}: missing")
        expected = secret.encode("utf-8")
        if not any(hmac.compare_digest(candidate, expected) for candidate in _token_bytes(token)):
            raise BadSignature(f"{TOKEN_HEADER}: does not match the configured secret")

    def parse(self, headers: Mapping[str, str], payload: Any) -> WebhookEvent:
        """Push and tag push hooks mean a push; every other event is Ignored with the reason."""
        event = header(headers, EVENT_HEADER)
        fields = Fields(payload)
        if event in PUSH_HOOKS:
            return self._push(fields)
        if event is not None and event != SYSTEM_HOOK:
            return Ignored(
                repository=self.repository_path(payload), reason=f"event {event[:100]!r} is not built"
            )
        kind = fields.optional_text("object_kind")
        if kind in PUSH_KINDS:
            return self._push(fields)
        if event is None and kind is None:
            raise MalformedPayload(f"{EVENT_HEADER}: missing, and the payload has no object_kind")
        return Ignored(
            repository=self.repository_path(payload), reason=f"object_kind {str(kind)[:100]!r} is not built"
        )

    def _push(self, fields: Fields) -> PushEvent | Ignored:
        repository = fields.child("project").text("path_with_namespace", allow_empty=False)
        ref = check_ref(fields.text("ref"), "ref")
        before = check_sha(fields.text("before"), "before")
        after = check_sha(fields.text("after"), "after")
        checkout = fields.optional_text("checkout_sha")
        author = fields.text("user_name")
        commits = fields.children("commits")
        total = fields.count("total_commits_count")
        commit_ids = [check_sha(commit.text("id"), commit.where("id")) for commit in commits]
        listed_files = files_changed(commits)

        deleted = is_zero_sha(after)
        if deleted and is_zero_sha(before):
            raise MalformedPayload("before: all zeros, but a deleted ref must have pointed somewhere")
        sha = after
        if checkout is not None and not deleted:
            # For an annotated tag `after` is the tag object; checkout_sha is the commit it tags.
            sha = check_sha(checkout, "checkout_sha")

        message = ""
        for commit, commit_id in zip(commits, commit_ids, strict=True):
            if commit_id == sha:
                message = commit.text("message")

        branch, tag = branch_and_tag(ref)
        if branch is None and tag is None:
            return Ignored(repository=repository, reason=f"ref {ref!r} is neither a branch nor a tag")

        # GitLab lists at most 20 commits and says how many there were; it never says "forced",
        # so a forced push's files are the union of the commits it lists.
        unknowable = deleted or is_zero_sha(before) or not commits or total > len(commits)
        return make_push(
            forge=self.name,
            repository=repository,
            default_branch=fields.child("project").optional_text("default_branch"),
            ref=ref,
            branch=branch,
            tag=tag,
            before=before,
            sha=sha,
            message=message,
            author=author,
            changed_files=None if unknowable else listed_files,
            deleted=deleted,
            forced=False,
        )


def _token_bytes(token: str) -> list[bytes]:
    """The bytes a token header may have arrived as.

    ASGI servers decode header bytes as latin-1, a plain dict holds real text: a non-ASCII secret
    must match either way.
    """
    candidates = []
    for encoding in ("utf-8", "latin-1"):
        try:
            candidates.append(token.encode(encoding))
        except UnicodeEncodeError:
            continue
    return candidates


GITLAB = GitLabForge()
