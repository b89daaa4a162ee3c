"""The deploy worker: takes a deployment from the database, runs its strategy (ciserver.deploy.rollout)
against the Docker Engine and nginx, and writes every step and the outcome back.

A paused deployment leaves its worker; resuming it hands it to any worker, which goes on from the
recorded step, as another does for a deployment its worker hands back when it stops. When a deployment
ends, the next one waiting for its environment, and the environments that follow it automatically,
are enqueued. A stop (ops took the environment down) is a deployment too, so that the worker that owns
the containers and nginx removes them, one deployment of the environment at a time.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from ciserver import queue
from ciserver.crypto import load_fernet
from ciserver.deploy.names import deploy_name, legacy_route_name
from ciserver.deploy.nginx_control import RouterError
from ciserver.deploy.rollout import COLORS, Outcome, Place, Rollout, RolloutStatus
from ciserver.deploy.router import Backend, NginxRouter
from ciserver.deploy.traffic_log import AccessLog
from ciserver.pipeline import Resources
from ciserver.states import Control, DeployAction, DeploymentStatus
from ciserver.store import deployments as store
from ciserver.store.db import session_scope
from ciserver.store.secrets import SecretError, secret_values
from workers.context import WorkerContext, current
from workers.deploy_script import run_script_deploy
from workers.executors.base import ExecutorError
from workers.executors.docker_service import DockerServiceTarget, ServiceRelease
from workers.jobspec import limits_for

log = logging.getLogger(__name__)

DEFAULT_RELOAD = "nginx -s reload"


def run_deployment(deployment_id: int) -> None:
    ctx = current()
    with session_scope(ctx.settings.db_url) as session:
        claimed = store.claim(session, deployment_id, ctx.worker_name)
    if claimed is None:
        return
    try:
        outcome = _stop(ctx, claimed) if claimed.action == DeployAction.stop else _roll_out(ctx, claimed)
    except (ExecutorError, SecretError) as exc:
        outcome = Outcome(RolloutStatus.failed, str(exc))
    except BaseException as exc:
        log.exception("deployment %s failed", deployment_id)
        internal = Outcome(RolloutStatus.failed, f"internal error: {type(exc).__name__}: {exc}")
        _finish(ctx, deployment_id, internal, claimed)
        raise
    _finish(ctx, deployment_id, outcome, claimed)


def _roll_out(ctx: WorkerContext, claimed: store.Claimed) -> Outcome:
    config = claimed.config
    environment = config.environments[claimed.environment]
    secrets: dict[str, str] = {}
    if environment.secrets:
        with session_scope(ctx.settings.db_url) as session:
            fernet = load_fernet(ctx.settings)
            secrets = secret_values(
                session, claimed.project_id, environment.secrets, fernet, claimed.environment
            )
    journal = _Journal(ctx, claimed.id)
    variables = {**environment.env, "CI_COMMIT_SHA": claimed.sha, "CI_PROJECT": claimed.project}
    if environment.script is not None:
        return run_script_deploy(ctx, claimed, environment, variables, secrets, journal)
    service = config.service
    assert service is not None and claimed.listen is not None  # the pipeline loader requires both
    if claimed.image is None:
        return Outcome(
            RolloutStatus.failed,
            "the release has no image: its pipeline has no image_build job that succeeded",
        )
    release = ServiceRelease(
        project=claimed.project,
        environment=claimed.environment,
        installation=str(ctx.settings.data_dir),
        image=claimed.image,
        port=service.port,
        health=service.health,
        env={**service.env, **variables, **secrets, "CISERVER_ENVIRONMENT": claimed.environment},
        command=service.command,
        limits=limits_for(Resources(), ctx.settings),
        pull_from=_pull_from(claimed.image_digest, ctx.settings.pull_images),
    )
    name = deploy_name(claimed.project, claimed.environment)
    router = NginxRouter(
        ctx.settings.router_dir, ctx.settings.router_reload or DEFAULT_RELOAD, ctx.settings.router_test
    )
    rollout = Rollout(
        strategy=environment.strategy,
        health_timeout=service.health_timeout,
        target=DockerServiceTarget(release),
        routing=_Route(router, name, claimed.listen, legacy_route_name(claimed.project, claimed.environment)),
        journal=journal,
        log=AccessLog(router.access_log(name)),
        place=Place(
            step=claimed.step,
            color=claimed.color,
            address=claimed.address,
            previous_color=claimed.previous_color,
            previous_address=claimed.previous_address,
        ),
    )
    return rollout.run()


def _stop(ctx: WorkerContext, claimed: store.Claimed) -> Outcome:
    """Take the environment down: its nginx file first, so nothing answers at its address, then its
    containers of both colors and its network. Done again, it finds nothing left and succeeds."""
    router = NginxRouter(
        ctx.settings.router_dir, ctx.settings.router_reload or DEFAULT_RELOAD, ctx.settings.router_test
    )
    legacy = legacy_route_name(claimed.project, claimed.environment)
    try:
        router.remove(deploy_name(claimed.project, claimed.environment), claimed.listen, replaces=[legacy])
    except RouterError as exc:
        return Outcome(RolloutStatus.failed, f"nginx kept the environment's route: {exc}")
    installation = str(ctx.settings.data_dir)
    release = ServiceRelease(claimed.project, claimed.environment, installation, image="", port=0, health="/")
    target = DockerServiceTarget(release)
    for color in COLORS:
        target.remove(color)
    return Outcome(RolloutStatus.succeeded)


def _pull_from(digest: str | None, pull: bool) -> str | None:
    """The registry reference of a pushed release image (REPO@sha256:..., exactly what was built),
    for an engine that lacks it; None when the image was never pushed or pulling is off."""
    return digest if pull and digest and "@sha256:" in digest else None


class _Route:
    """The rollout's Routing for one environment: its nginx file and listen address. The file an
    earlier release wrote under the environment's old (ambiguous) name goes with the first change,
    when it listens on this environment's address."""

    def __init__(self, router: NginxRouter, name: str, listen: str, legacy_name: str) -> None:
        self.router, self.name, self.listen, self.legacy_name = router, name, listen, legacy_name

    def set_weights(self, backends: list[Backend]) -> None:
        self.router.set_weights(self.name, self.listen, backends, replaces=[self.legacy_name])


class _Journal:
    """The rollout's Journal: each call a short transaction, so the API sees every step at once."""

    def __init__(self, ctx: WorkerContext, deployment_id: int) -> None:
        self.db, self.id = ctx.settings.db_url, deployment_id
        self.ctx = ctx

    def save(self, **values: Any) -> None:
        with session_scope(self.db) as session:
            store.save_progress(session, self.id, **values)

    def add_step(self, entry: dict[str, Any]) -> None:
        with session_scope(self.db) as session:
            store.add_step(session, self.id, entry)

    def control(self) -> tuple[Control | None, str | None]:
        with session_scope(self.db) as session:
            action, by = store.control_of(session, self.id)
        if action is None and self.ctx.hand_back.is_set():
            return Control.hand_back, f"worker {self.ctx.worker_name}, told to stop"
        return action, by


def _finish(ctx: WorkerContext, deployment_id: int, outcome: Outcome, claimed: store.Claimed) -> None:
    with session_scope(ctx.settings.db_url) as session:
        if outcome.status == RolloutStatus.paused:
            store.pause(session, deployment_id)
            return
        if outcome.status == RolloutStatus.handed_back:
            store.hand_back(session, deployment_id)  # the outbox gives it to another worker
            return
        # The rollout's other ends are the deployment's final statuses, by the same names.
        start = store.finish(session, deployment_id, DeploymentStatus(outcome.status), outcome.reason)
    try:
        queue.enqueue_deployments(ctx.redis, start)
        if outcome.retire:
            keep = claimed.config.environments[claimed.environment].strategy.keep_previous
            queue.enqueue_retire(ctx.redis, claimed.project, claimed.environment, outcome.retire, keep)
    except RedisError as exc:
        log.warning("deployments %s: left to the outbox: %s", start, exc)


def retire(project: str, environment: str, color: str) -> None:
    """Remove a previous color once its keep_previous has passed, unless it serves again (a rollback)
    or a deployment of the environment waits or runs (it may reuse the container)."""
    ctx = current()
    with session_scope(ctx.settings.db_url) as session:
        if store.retirable(session, project, environment, color):
            installation = str(ctx.settings.data_dir)
            release = ServiceRelease(project, environment, installation, image="", port=0, health="/")
            DockerServiceTarget(release).remove(color)
