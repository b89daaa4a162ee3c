"""The dashboard's session: the API token in an HttpOnly, SameSite=Strict cookie, and the CSRF token
every write made with that cookie must carry.

The CSRF token is an HMAC of the session's token, so it needs no storage and changes with the
session; a page puts it where the dashboard's scripts and forms read it, and another site can
neither read the page nor compute it. Bearer-token calls carry no cookie and need none.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "ciserver_session"
# Before sign-in there is no session to derive from: the sign-in form's token is a random value kept
# in this cookie as well (double submit), so another site cannot sign a browser in as someone else.
LOGIN_COOKIE = "ciserver_login"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_DAYS = 30


def session_token(request: Request) -> str | None:
    """The API token the browser signed in with, if it sent one."""
    return request.cookies.get(SESSION_COOKIE) or None


def csrf_token(session: str) -> str:
    """The CSRF token of the session whose API token is `session`."""
    return hmac.new(session.encode(), b"ciserver dashboard csrf", hashlib.sha256).hexdigest()


def csrf_ok(session: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(csrf_token(session), given)


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def login_ok(request: Request, given: str | None) -> bool:
    kept = request.cookies.get(LOGIN_COOKIE)
    return bool(kept and given) and hmac.compare_digest(kept, given or "")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_DAYS * 86400,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")


def set_login(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE, value, path="/login", httponly=True, samesite="strict", secure=_secure(request)
    )


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
    )
