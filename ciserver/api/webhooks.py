"""POST /webhooks/{forge}/{OWNER/NAME} (and the shared /webhooks/{forge}): a push becomes a recorded
build in one transaction and one enqueue.

The forge waits 10 s and never (GitHub) or rarely (GitLab) retries, so this path does the least
it can: read the body within the size cap, find the project, check the signature, record the
build and its delivery id together, enqueue. A Redis outage still answers 202, because the
build is recorded and the outbox enqueues it later; a database outage answers 503 so the forge
shows a failed delivery someone can redeliver. Never a 500.

Nothing in a body is trusted, or parsed, before its signature is checked: the event loop only reads
the bytes, and a thread checks them with the secret of the project the URL names (on the shared URL,
of the few repositories a bounded scan of the raw bytes finds; see `forges.scan`). Only then is the
JSON parsed, and it must name that same project. A repository that is not registered gets a bad
signature's answer, word for word, so the answers tell nobody which repositories are registered.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ciserver import queue
from ciserver.api.deps import DatabaseDep, SettingsDep
from ciserver.api.errors import delivery_refused
from ciserver.api.schemas import WebhookAnswer
from ciserver.config import Settings
from ciserver.crypto import SecretKeyError, load_fernet
from ciserver.forges import FORGES, Forge
from ciserver.forges.base import BadSignature, Ignored, MalformedPayload, Ping, PushEvent, WebhookError
from ciserver.store.builds import PushRecord, record_push
from ciserver.store.db import session_scope
from ciserver.store.models import Project
from ciserver.store.projects import projects_named, webhook_secret

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

SKIP_MARKERS = ("[skip ci]", "[ci skip]")
JSON_TYPES = ("application/json", "")
# What a repository that is not registered is checked against: nobody can sign with it.
_UNGUESSABLE = secrets.token_urlsafe(32)


@dataclass(frozen=True)
class _Signer:
    """The project whose secret verified a body."""

    id: int
    name: str


def _answer(
    code: int, message: str, build_id: int | None = None, duplicate: bool | None = None
) -> JSONResponse:
    body = WebhookAnswer(build_id=build_id, duplicate=duplicate, message=message)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=code)


_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "ping, ignored event, skipped push or redelivery"},
    401: {"description": "bad or missing signature or token, or a repository not registered"},
}


@router.post(
    "/webhooks/{forge_name}/{project_name:repo_path}",
    response_model=WebhookAnswer,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_ANSWERS,
    summary="Receive a forge's webhook for one project (GitHub: X-Hub-Signature-256; GitLab: X-Gitlab-Token; "
    "Gitea: X-Gitea-Signature)",
)
async def receive_project_webhook(
    forge_name: str, project_name: str, request: Request, settings: SettingsDep, db: DatabaseDep
) -> JSONResponse:
    return await _receive(forge_name, project_name, request, settings, db.url)


@router.post(
    "/webhooks/{forge_name}",
    response_model=WebhookAnswer,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_ANSWERS,
    summary="Receive a forge's webhook for the repository it names (the shared URL of earlier releases)",
)
async def receive_webhook(
    forge_name: str, request: Request, settings: SettingsDep, db: DatabaseDep
) -> JSONResponse:
    return await _receive(forge_name, None, request, settings, db.url)


async def _receive(
    forge_name: str, project_name: str | None, request: Request, settings: Settings, db_url: str
) -> JSONResponse:
    forge = FORGES.get(forge_name)
    if forge is None:
        return _answer(status.HTTP_404_NOT_FOUND, f"forge: {forge_name!r} is not one of {', '.join(FORGES)}")
    refusal = _content_type_refusal(request.headers.get("content-type", ""))
    if refusal:
        return _answer(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, refusal)
    body = await _read_body(request)
    return await run_in_threadpool(
        _answer_delivery, forge, project_name, request.headers, body, settings, db_url
    )


def _answer_delivery(
    forge: Forge,
    project_name: str | None,
    headers: Mapping[str, str],
    body: bytes,
    settings: Settings,
    db_url: str,
) -> JSONResponse:
    """Every outcome as an answer, made here in the thread: an exception carried back to the event
    loop would keep the body alive in a reference cycle until the garbage collector next ran."""
    try:
        return _handle(forge, project_name, headers, body, settings, db_url)
    except WebhookError as exc:
        return delivery_refused(exc)
    except SecretKeyError as exc:
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))
    except SQLAlchemyError:
        log.exception("webhook: the database is unavailable")
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, "the database is unavailable; redeliver later")
    except Exception:
        log.exception("webhook: unexpected error")
        return _answer(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the server could not record this push; redeliver later"
        )


def _content_type_refusal(content_type: str) -> str | None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type in JSON_TYPES:
        return None
    return f"Content-Type: {media_type!r} is not accepted; set the webhook's content type to application/json"


async def _read_body(request: Request) -> bytes:
    """The body, held once, in a buffer that grows as bytes arrive: before it is verified, a request
    costs what its bytes take (chunks and their join would take twice that, and a buffer made at
    the declared size would cost it before a byte was sent). The app's body limit (api.errors)
    refuses a body over settings.max_body_bytes as it is read, by its Content-Length or its bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    return body


def _handle(
    forge: Forge,
    project_name: str | None,
    headers: Mapping[str, str],
    body: bytes,
    settings: Settings,
    db_url: str,
) -> JSONResponse:
    names = [project_name] if project_name else forge.repository_candidates(body)
    if not names and forge.is_ping(headers):
        # An organisation's ping: nothing to verify it with, and nothing it could make us do.
        return _answer(status.HTTP_200_OK, "pong: this hook names no repository; only its pushes build")
    signer = _verified_signer(forge, names, headers, body, settings, db_url)
    payload = _json(body)
    named = forge.repository_path(payload)
    if named is not None and named.lower() != signer.name.lower():
        raise MalformedPayload(
            f"{forge.repository_field}: the payload is for {named!r}, not for {signer.name!r}; "
            "nothing is built"
        )
    event = forge.parse(headers, payload)
    if isinstance(event, Ping):
        return _answer(status.HTTP_200_OK, f"pong: {signer.name} is registered")
    if isinstance(event, Ignored):
        return _answer(status.HTTP_200_OK, event.reason)
    reason = _not_built(event)
    if reason:
        return _answer(status.HTTP_200_OK, reason)
    with session_scope(db_url) as session:
        project = session.get_one(Project, signer.id)
        build, created = record_push(
            session, project, _record(event), forge=forge.name, delivery_id=forge.delivery_id(headers)
        )
        build_id = build.id
    if not created:
        return _answer(status.HTTP_200_OK, "delivery already received", build_id=build_id, duplicate=True)
    try:
        queue.enqueue_build(queue.connect(settings.redis_url or ""), build_id)
    except (RedisError, ValueError) as exc:
        # Recorded is enough: the outbox enqueues queued builds the queue does not know.
        log.warning("build %s recorded but not enqueued (%s); the outbox will enqueue it", build_id, exc)
    return _answer(status.HTTP_202_ACCEPTED, "build queued", build_id=build_id)


def _verified_signer(
    forge: Forge, names: list[str], headers: Mapping[str, str], body: bytes, settings: Settings, db_url: str
) -> _Signer:
    """The project among `names`, registered for this forge, whose secret signed `body`.

    The secrets are read in a short transaction, and the body is hashed outside it: a flood of
    unsigned bodies holds no database lock. With no registered project among `names`, the body is
    checked against a secret nobody has, so the refusal is the one a wrong signature gets.
    """
    fernet = load_fernet(settings)
    with session_scope(db_url) as session:
        keys: list[tuple[_Signer | None, str]] = [
            (_Signer(p.id, p.name), webhook_secret(p, fernet))
            for p in projects_named(session, names)
            if p.forge == forge.name
        ]
    refusal = ""  # the first: every refusal of one request says the same, whatever the secret
    for signer, secret in keys or [(None, _UNGUESSABLE)]:
        try:
            forge.verify(headers, body, secret)
        except BadSignature as exc:
            # Only its message is kept: an exception kept here would hold this frame, and the body
            # with it, in a reference cycle until the garbage collector next ran.
            refusal = refusal or exc.message
            continue
        if signer is not None:
            return signer
    raise BadSignature(refusal)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedPayload("body: not valid JSON") from None


def _not_built(event: PushEvent) -> str | None:
    if event.deleted:
        return f"{event.ref} was deleted: nothing to build"
    lowered = event.message.lower()
    for marker in SKIP_MARKERS:
        if marker in lowered:
            return f"skipped: the head commit message contains {marker}"
    return None


def _record(event: PushEvent) -> PushRecord:
    return PushRecord(**{f.name: getattr(event, f.name) for f in fields(PushRecord)})
