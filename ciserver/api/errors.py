"""Error answers every route shares: a 422 that names the field but never repeats the input (it may be
a secret, or megabytes); the answers to what the store and the forges refuse, which carry no HTTP
status of their own; and a 413 for a request body over its path's limit, before it is read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ciserver.api.schemas import WebhookAnswer
from ciserver.forges.base import BadSignature, WebhookError
from ciserver.store.deployments import DeployRefused, DeployTargetMissing


def describe(errors: Any) -> str:
    """`field: problem; ...` from pydantic's errors, without their `input`."""
    parts = []
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ())[1:]) or "body"
        parts.append(f"{field}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def deploy_refused(exc: DeployRefused) -> JSONResponse:
    """404 for a build or environment the project does not have, 409 for what the state forbids."""
    code = status.HTTP_404_NOT_FOUND if isinstance(exc, DeployTargetMissing) else status.HTTP_409_CONFLICT
    return JSONResponse({"detail": exc.message}, code)


def delivery_refused(exc: WebhookError) -> JSONResponse:
    """401 for a missing or wrong signature, 422 for a malformed payload, in a forge's answer shape.

    The webhook route calls it in the thread that handled the delivery rather than raising to a
    handler: an exception carried back to the event loop would keep the body alive in a reference
    cycle until the garbage collector next ran.
    """
    code = (
        status.HTTP_401_UNAUTHORIZED
        if isinstance(exc, BadSignature)
        else status.HTTP_422_UNPROCESSABLE_CONTENT
    )
    return JSONResponse(WebhookAnswer(message=exc.message).model_dump(exclude_none=True), code)


def install(app: FastAPI, *, max_body: int, webhooks: str, webhook_max_body: int) -> None:
    """The error handlers, and the body limit: `webhook_max_body` bytes on paths starting with
    `webhooks`, `max_body` on every other."""

    @app.exception_handler(RequestValidationError)
    async def no_echo(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe(exc.errors())}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(DeployRefused)
    async def refused(_request: Request, exc: DeployRefused) -> JSONResponse:
        return deploy_refused(exc)

    webhook_refusal = WebhookAnswer(message=f"body: larger than {webhook_max_body} bytes")
    caps = (
        # Checked as the webhook reads the body: an unknown forge or content type is answered first.
        BodyCap(webhooks, webhook_max_body, webhook_refusal.model_dump(exclude_none=True), when_read=True),
        BodyCap("", max_body, {"detail": f"body: larger than {max_body:,} bytes"}),
    )
    app.add_middleware(BodyLimit, caps=caps)


@dataclass(frozen=True)
class BodyCap:
    """At most `limit` bytes of body for requests to paths starting with `prefix`, and the 413's JSON.

    A Content-Length over the limit is refused when the request arrives, or, `when_read`, when the
    route first reads the body (so what the route answers without reading it comes first)."""

    prefix: str
    limit: int
    refusal: Mapping[str, str]
    when_read: bool = False


class BodyLimit:
    """413 for a body over its path's cap (the first that matches), by its Content-Length or as it
    streams in."""

    def __init__(self, app: ASGIApp, *, caps: Sequence[BodyCap]) -> None:
        self.app, self.caps = app, caps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = next(cap for cap in self.caps if scope["path"].startswith(cap.prefix))
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        declared_over = declared.isdigit() and int(declared) > cap.limit
        if declared_over and not cap.when_read:
            await _refuse(send, cap)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            if declared_over:
                raise _TooLarge
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > cap.limit:
                raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _refuse(send, cap)


async def _refuse(send: Send, cap: BodyCap) -> None:
    response = JSONResponse(dict(cap.refusal), status.HTTP_413_CONTENT_TOO_LARGE)
    await send(
        {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass
