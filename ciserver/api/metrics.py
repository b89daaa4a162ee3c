"""GET /metrics for Prometheus (see ciserver.metrics for what it reads), and the count of webhook
deliveries by forge and answer.

Who may scrape: a viewer token, like every other read. The numbers name no project, but they say how
busy the server is, how often pushes fail and how many workers it has, which is nobody's business
outside; Prometheus sends a bearer token with `authorization: {credentials: ...}` (or
`credentials_file`). Where the scraper cannot hold one and the port is reachable only by it,
CISERVER_METRICS_PUBLIC=true serves it without a token.

Deliveries are counted by a middleware around the webhook paths rather than in the route: the
answers the route never makes (the 413 for a body over the cap, which the body limit answers as the
route reads) are counted too. The forge label is one of the forges the server knows, or `unknown`,
so a caller cannot grow the number of series.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ciserver.api.deps import require
from ciserver.config import Settings
from ciserver.forges import FORGES
from ciserver.metrics import metrics_registry
from ciserver.store.models import Role

WEBHOOKS = "/webhooks/"

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: builds, jobs and deployments by status, durations, queues, workers",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, settings: Settings) -> None:
    """The /metrics route (behind a viewer token unless CISERVER_METRICS_PUBLIC) and the delivery
    count; add it after the body limit, so that its 413s pass through the count."""
    registry, deliveries = metrics_registry(settings)
    app.state.metrics = registry
    guard = [] if settings.metrics_public else [Depends(require(Role.viewer))]
    app.include_router(router, dependencies=guard)
    app.add_middleware(CountDeliveries, counter=deliveries)


def forge_label(path: str) -> str:
    """The forge a webhook path names, when it is one the server knows."""
    name = path[len(WEBHOOKS) :].split("/", 1)[0]
    return name if name in FORGES else "unknown"


class CountDeliveries:
    """ASGI middleware: counts each answer to a webhook path by forge and HTTP status."""

    def __init__(self, app: ASGIApp, *, counter: Counter) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(WEBHOOKS):
            await self.app(scope, receive, send)
            return
        forge = forge_label(scope["path"])

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.counter.labels(forge, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)
