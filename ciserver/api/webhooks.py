"""POST /webhooks/{forge}: a push becomes a recorded build in one transaction and one enqueue.

The forge waits 10 s and never (GitHub) or rarely (GitLab) retries, so this path does the least
it can: read the body within the size cap, find the project, check the signature, record the
build and its delivery id together, enqueue. A Redis outage still answers 202, because the
build is recorded and the outbox enqueues it later; a database outage answers 503 so the forge
shows a failed delivery someone can redeliver. Never a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ciserver import queue
from ciserver.api.deps import DatabaseDep, SettingsDep
from ciserver.api.schemas import WebhookAnswer
from ciserver.config import Settings
from ciserver.crypto import SecretKeyError, load_fernet
from ciserver.forges import FORGES, Forge
from ciserver.forges.base import Ignored, MalformedPayload, Ping, PushEvent, WebhookError
from ciserver.store.builds import PushRecord, record_push
from ciserver.store.db import session_scope
from ciserver.store.projects import get_project, webhook_secret

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

SKIP_MARKERS = ("[skip ci]", "[ci skip]")
JSON_TYPES = ("application/json", "")


class BodyTooLarge(WebhookError):
    def __init__(self, limit: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, f"body: larger than {limit} bytes")


def _answer(
    code: int, message: str, build_id: int | None = None, duplicate: bool | None = None
) -> JSONResponse:
    body = WebhookAnswer(build_id=build_id, duplicate=duplicate, message=message)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=code)


@router.post(
    "/webhooks/{forge_name}",
    response_model=WebhookAnswer,
    status_code=status.HTTP_202_ACCEPTED,
    responses={200: {"description": "ping, ignored event, skipped push or redelivery"}},
    summary="Receive a forge's webhook (GitHub: X-Hub-Signature-256; GitLab: X-Gitlab-Token)",
)
async def receive_webhook(
    forge_name: str, request: Request, settings: SettingsDep, db: DatabaseDep
) -> JSONResponse:
    forge = FORGES.get(forge_name)
    if forge is None:
        return _answer(status.HTTP_404_NOT_FOUND, f"forge: {forge_name!r} is not one of {', '.join(FORGES)}")
    try:
        body = await _read_body(request, settings.max_body_bytes)
        payload = _json(request.headers.get("content-type", ""), body)
        return await run_in_threadpool(_handle, forge, request.headers, body, payload, settings, db.url)
    except WebhookError as exc:
        return _answer(exc.status_code, exc.message)
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


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _json(content_type: str, body: bytes) -> Any:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in JSON_TYPES:
        raise WebhookError(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type: {media_type!r} is not accepted; set the webhook's content type to "
            "application/json",
        )
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedPayload("body: not valid JSON") from None


def _handle(
    forge: Forge, headers: Mapping[str, str], body: bytes, payload: Any, settings: Settings, db_url: str
) -> JSONResponse:
    repository = forge.repository_path(payload)
    if repository is None:
        # Nothing to verify against: only an event that does nothing (an organisation's ping) passes.
        event = forge.parse(headers, payload)
        if isinstance(event, PushEvent):
            raise MalformedPayload("repository: missing")
        return _answer(status.HTTP_200_OK, "pong" if isinstance(event, Ping) else event.reason)
    with session_scope(db_url) as session:
        project = get_project(session, repository)
        if project is None or project.forge != forge.name:
            return _answer(
                status.HTTP_404_NOT_FOUND, f"repository: no {forge.name} project {repository!r} is registered"
            )
        forge.verify(headers, body, webhook_secret(project, load_fernet(settings)))
        event = forge.parse(headers, payload)
        if isinstance(event, Ping):
            return _answer(status.HTTP_200_OK, f"pong: {project.name} is registered")
        if isinstance(event, Ignored):
            return _answer(status.HTTP_200_OK, event.reason)
        reason = _not_built(event)
        if reason:
            return _answer(status.HTTP_200_OK, reason)
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
