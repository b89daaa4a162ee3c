"""Sign-in and sign-out: an API token (from `ciserver token create`) traded for the session cookie.

The form is parsed here from the urlencoded body, which is all a browser's form sends, rather than
adding a multipart parser to the server for two fields."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ciserver.api.deps import DatabaseDep, caller_of
from ciserver.web.render import local_path, page
from ciserver.web.session import (
    CSRF_FIELD,
    clear_session,
    csrf_ok,
    login_ok,
    new_login_token,
    session_token,
    set_login,
    set_session,
)

router = APIRouter(include_in_schema=False)

MAX_FORM = 8 * 1024


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body())[:MAX_FORM]
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=8)
    return {name: values[0] for name, values in fields.items()}


def _login_page(request: Request, target: str, error: str | None = None, status_code: int = 200) -> Response:
    value = new_login_token()
    response = page(request, "login.html", None, status_code, target=target, login_csrf=value, error=error)
    set_login(response, request, value)
    return response


@router.get("/login")
def login_form(request: Request, db: DatabaseDep, next: str | None = None) -> Response:
    target = local_path(next)
    session = session_token(request)
    if session and caller_of(db, session) is not None:
        return RedirectResponse(target, status_code=303)
    return _login_page(request, target)


@router.post("/login")
async def login(request: Request, db: DatabaseDep) -> Response:
    form = await _form(request)
    target = local_path(form.get("next"))
    if not login_ok(request, form.get(CSRF_FIELD)):
        return _login_page(request, target, "The sign-in form expired; sign in again.", 403)
    token = form.get("token", "").strip()
    if not token:
        return _login_page(request, target, "token: paste an API token from `ciserver token create`.", 422)
    if caller_of(db, token) is None:
        return _login_page(request, target, "token: unknown, revoked or expired.", 401)
    response = RedirectResponse(target, status_code=303)
    set_session(response, request, token)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    session = session_token(request)
    if session and not csrf_ok(session, form.get(CSRF_FIELD)):
        return Response("csrf_token: sign-out needs the page's CSRF token", 403, media_type="text/plain")
    response = RedirectResponse("/login", status_code=303)
    clear_session(response, request)
    return response
