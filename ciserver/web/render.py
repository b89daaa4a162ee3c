"""Turning a template into a page: autoescaped Jinja2, the signed-in caller and their CSRF token in
every page, and headers that keep a page from running any script but the dashboard's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ciserver import __version__
from ciserver.api.deps import Caller
from ciserver.store.models import Role, utcnow
from ciserver.web import views
from ciserver.web.session import RESUME_COOKIE, csrf_token, may_resume, session_token, set_resume

HERE = Path(__file__).parent

# Inline script is refused outright: even a value that escaped the templates' escaping cannot run.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# Autoescaped everywhere, whatever a template's name: every value a pusher wrote reaches a page as text.
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined)
)
templates.env.globals.update(span=views.span, age=views.age, duration=views.duration, Role=Role)
templates.env.globals["version"] = __version__


def page(
    request: Request, name: str, caller: Caller | None, status_code: int = 200, **context: Any
) -> Response:
    """The template `name` as a page for `caller`."""
    session = session_token(request)
    context.update(
        caller=caller,
        csrf=csrf_token(session) if session and caller else "",
        now=utcnow(),
    )
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(HEADERS)
    if RESUME_COOKIE in request.cookies:
        response.delete_cookie(RESUME_COOKIE, path="/")
    return response


def to_login(request: Request) -> Response:
    """Back to this page once signed in; or, when another site's link left the session cookie
    behind, this page once more from itself, which sends it."""
    if may_resume(request):
        response = templates.TemplateResponse(request, "resume.html", {})
        response.headers.update(HEADERS)
        set_resume(response, request)
        return response
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    response.delete_cookie(RESUME_COOKIE, path="/")
    return response


def local_path(target: str | None) -> str:
    """`target` if it is a path on this server, else `/` (a `next` of //evil.example is not)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
