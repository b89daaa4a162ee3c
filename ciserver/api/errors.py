"""Error answers every route shares: a 422 that names the field but never repeats the input (it may be
a secret, or megabytes), and a 413 for request bodies over the limit before they are read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def describe(errors: Any) -> str:
    """`field: problem; ...` from pydantic's errors, without their `input`."""
    parts = []
    for error in errors:
        field = ".".join(str(p) for p in error.get("loc", ())[1:]) or "body"
        parts.append(f"{field}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def install(app: FastAPI, *, max_body: int, exempt: str) -> None:
    """The 422 handler, and the body limit for every path but those starting with `exempt` (the
    webhooks, which check their own, larger one)."""

    @app.exception_handler(RequestValidationError)
    async def no_echo(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe(exc.errors())}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    app.add_middleware(BodyLimit, max_body=max_body, exempt=exempt)


class BodyLimit:
    """413 for a body over `max_body` bytes, by its Content-Length or as it streams in."""

    def __init__(self, app: ASGIApp, *, max_body: int, exempt: str) -> None:
        self.app, self.max_body, self.exempt = app, max_body, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
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
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"body: larger than {self.max_body:,} bytes"}, status.HTTP_413_CONTENT_TOO_LARGE
        )
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
        )
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass
