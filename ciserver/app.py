"""The FastAPI application: routers, error answers, and the outbox thread."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse

from ciserver import __version__
from ciserver.api import artifacts, builds, deployments, errors, jobs, projects, releases, tokens, webhooks
from ciserver.api import secrets as secrets_api
from ciserver.config import Settings, get_settings
from ciserver.crypto import SecretKeyError, load_fernet
from ciserver.outbox import OutboxThread
from ciserver.store.clone_credentials import seal_clone_urls_at_start
from ciserver.store.db import engine_for, session_scope
from ciserver.store.projects import seal_clear_webhook_secrets

log = logging.getLogger(__name__)


def _seal_webhook_secrets(settings: Settings) -> None:
    """Webhook secrets an earlier release kept in clear, encrypted now (a broken key: the webhooks
    answer 503 saying which setting, until it is fixed)."""
    try:
        fernet = load_fernet(settings)
    except SecretKeyError:
        return
    with session_scope(settings.db_url) as session:
        sealed = seal_clear_webhook_secrets(session, fernet)
    if sealed:
        log.warning("encrypted the webhook secrets of %s, kept in clear until now", ", ".join(sealed))


def create_app(settings: Settings | None = None, *, outbox: bool = True) -> FastAPI:
    """The API for `settings` (default: from the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine_for(settings.db_url)  # creates the tables before the first request
        _seal_webhook_secrets(settings)
        seal_clone_urls_at_start(settings)
        thread = OutboxThread(settings) if outbox and settings.redis_url else None
        if thread:
            thread.start()
        yield
        if thread:
            thread.stopped.set()

    app = FastAPI(
        title="ciserver",
        version=__version__,
        summary="A self-hosted Git webhook CI/CD server",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app, max_body=settings.api_max_body_bytes, exempt="/webhooks/")
    # Before the projects router: its /projects/{name:path} would take /projects/o/r/secrets (and
    # /environments, /releases) too.
    app.include_router(secrets_api.router)
    app.include_router(releases.router)
    for module in (webhooks, projects, builds, jobs, artifacts, deployments, tokens):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    return app
