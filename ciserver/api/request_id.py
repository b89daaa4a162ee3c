"""Every request gets an id: the caller's `X-Request-ID` when it is sane, else a new one. It is
echoed in the answer and carried by every process log line written while the request is served
(uvicorn's access line too), so a client's report and the server's log meet on it.

"Sane" is what a proxy or a client generates (a UUID, a hex or base64 token): 1 to 128 characters of
letters, digits and `-_.:+/=`. Anything else (spaces, quotes, newlines, kilobytes) is replaced rather
than logged, since the header is the caller's to write.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ciserver.logging_setup import log_context

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def request_id_from(value: str | None) -> str:
    """The caller's id when it is sane, else a new random one."""
    if value is not None and _SANE.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestId:
    """ASGI middleware: the request's id in the log context and in the answer's `X-Request-ID`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = [v for k, v in scope.get("headers") or [] if k == b"x-request-id"]
        request_id = request_id_from(incoming[0].decode("latin-1") if len(incoming) == 1 else None)

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        with log_context(request_id=request_id):
            await self.app(scope, receive, with_id)
