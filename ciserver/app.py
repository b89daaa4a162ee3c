"""The FastAPI application: routers, error answers, and the outbox thread.

The server's key is checked against the database by the commands that start a server (`serve`, `up`;
see `store.key_check`) before this app is made; a key broken later answers 503 naming the setting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ciserver import __version__
from ciserver.api import artifacts, builds, deployments, errors, jobs, projects, releases, tokens, webhooks
from ciserver.api import audit as audit_api
from ciserver.api import events as events_api
from ciserver.api import metrics as metrics_api
from ciserver.api import secrets as secrets_api
from ciserver.api.request_id import RequestId
from ciserver.config import Settings, get_settings
from ciserver.event_bus import install_publisher
from ciserver.outbox import OutboxThread
from ciserver.statuses import StatusThread
from ciserver.store.db import engine_for
from ciserver.web import routes as web


def create_app(settings: Settings | None = None, *, outbox: bool = True) -> FastAPI:
    """The API for `settings` (default: from the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine_for(settings.db_url)  # creates the tables before the first request
        install_publisher(settings.redis_url)  # wakes the event streams after each commit
        thread = OutboxThread(settings) if outbox and settings.redis_url else None
        if thread:
            thread.start()
        # Commit statuses to the forges: no Redis needed, so an app without a queue reports too.
        reporter = StatusThread(settings) if outbox else None
        if reporter:
            reporter.start()
        yield
        if thread:
            thread.stopped.set()
        if reporter:
            reporter.stopped.set()

    app = FastAPI(
        title="ciserver",
        version=__version__,
        summary="A self-hosted Git webhook CI/CD server",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(
        app,
        max_body=settings.api_max_body_bytes,
        webhooks="/webhooks/",
        webhook_max_body=settings.max_body_bytes,
    )
    metrics_api.install(app, settings)  # outside the body limit: its 413s are counted
    app.add_middleware(RequestId)  # the outermost: every answer carries it, every log line inside too
    # Before the projects router: its /projects/{name:path} would take /projects/o/r/secrets (and
    # /environments, /releases) too.
    app.include_router(secrets_api.router)
    app.include_router(releases.router)
    for module in (webhooks, projects, builds, jobs, artifacts, deployments, tokens):
        app.include_router(module.router)
    app.include_router(audit_api.router)
    app.include_router(events_api.router)

    web.install(app)  # the dashboard at /

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    return app
