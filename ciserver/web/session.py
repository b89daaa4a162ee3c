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
# SameSite=Strict keeps the session cookie off every request another site starts, the link in a
# commit status on the forge too. This Lax cookie (no secret in it) tells such a request that the
# browser has a session, so the page reloads itself once: a request the page starts is same-site.
SIGNED_IN_COOKIE = "ciserver_signed_in"
RESUME_COOKIE = "ciserver_resume"  # set for that one reload, so a lost session cannot loop
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
    response.set_cookie(
        SIGNED_IN_COOKIE,
        "1",
        max_age=SESSION_DAYS * 86400,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")


def may_resume(request: Request) -> bool:
    """Whether a request without the session cookie may be one another site started from a
    browser that has a session (and has not just reloaded for it)."""
    return SIGNED_IN_COOKIE in request.cookies and RESUME_COOKIE not in request.cookies


def set_resume(response: Response, request: Request) -> None:
    response.set_cookie(
        RESUME_COOKIE, "1", max_age=10, path="/", httponly=True, samesite="lax", secure=_secure(request)
    )


def set_login(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE, value, path="/login", httponly=True, samesite="strict", secure=_secure(request)
    )


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(SIGNED_IN_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(request))
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request)
    )
