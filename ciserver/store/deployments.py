"""Deployments: the record of each one, decided in the database so that API and workers agree.

A deployment carries a release (store.releases) to an environment, with the listen and strategy the
server keeps for it (store.environments). At most one deployment of an environment is under way
(progressing or paused); later ones wait as `pending`, and a newer pending one supersedes an older.
A deploy worker claims one, records its progress and its end; an operator pauses, resumes or aborts
it; a worker that stops, or is lost, hands it back for another to go on from the recorded step.
Each function runs in the caller's transaction and locks the environment's row before it decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, object_session

from ciserver.pipeline import DeployConfig
from ciserver.states import Control, DeployAction, DeploymentStatus
from ciserver.store import environments
from ciserver.store.dispatch import lock_project
from ciserver.store.events import record_deployment
from ciserver.store.models import Build, Deployment, Environment, Project, Release, utcnow

UNDER_WAY = (DeploymentStatus.progressing, DeploymentStatus.paused)


class DeployRefused(Exception):
    """A promote, rollback or control of a deployment that the state of things does not allow now;
    the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeployTargetMissing(DeployRefused):
    """A promote or rollback naming a build or environment the project does not have."""


def config_of(release: Release) -> DeployConfig:
    return DeployConfig.model_validate(release.config)


def new_deployment(
    session: Session, release: Release, environment: Environment, action: DeployAction, triggered_by: str
) -> Deployment:
    """A pending deployment; an older pending one of the environment is superseded by it."""
    declared = config_of(release).environments[environment.name]
    strategy = environments.effective(environment, declared).strategy.kind
    deployment = Deployment(
        project_id=release.project_id,
        environment_id=environment.id,
        release_id=release.id,
        action=action,
        strategy=strategy,
        triggered_by=triggered_by,
        steps=[],
    )
    session.add(deployment)
    session.flush()
    record_deployment(session, deployment)
    waiting = select(Deployment).where(
        Deployment.environment_id == environment.id,
        Deployment.status == DeploymentStatus.pending,
        Deployment.id != deployment.id,
    )
    for older in session.scalars(waiting):
        _end(older, DeploymentStatus.failed, f"superseded by deployment {deployment.id}")
    return deployment


def _end(deployment: Deployment, status: DeploymentStatus, reason: str | None) -> None:
    deployment.status, deployment.reason = status, reason
    deployment.finished_at, deployment.worker = utcnow(), None
    _changed(deployment)


def _changed(deployment: Deployment) -> None:
    """Its new state, as an event, in the transaction that holds it."""
    session = object_session(deployment)
    assert session is not None  # every deployment here was read through a session
    record_deployment(session, deployment)


def deployment_under_way(session: Session, environment_id: int, but: int | None = None) -> Deployment | None:
    """The environment's deployment that is progressing or paused (but `but`), if any."""
    query = select(Deployment).where(
        Deployment.environment_id == environment_id, Deployment.status.in_(UNDER_WAY)
    )
    if but is not None:
        query = query.where(Deployment.id != but)
    return session.scalars(query.order_by(Deployment.id)).first()


def retirable(session: Session, project: str, environment: str, color: str) -> bool:
    """Whether a previous color may be removed now: the environment does not serve it and has no
    deployment waiting or under way (which might reuse it). Locks the environment's row, so none
    starts before the caller's transaction ends: remove the container inside it."""
    row = session.scalar(
        select(Environment)
        .join(Project, Project.id == Environment.project_id)
        .where(Project.name == project, Environment.name == environment)
        .with_for_update(of=Environment)
        .execution_options(populate_existing=True)
    )
    if row is None or row.color == color:
        return False
    waiting = select(Deployment.id).where(
        Deployment.environment_id == row.id,
        Deployment.status.in_((DeploymentStatus.pending, *UNDER_WAY)),
    )
    return session.scalar(waiting.limit(1)) is None


@dataclass(frozen=True)
class Claimed:
    """What a deploy worker needs, read in the claiming transaction."""

    id: int
    project_id: int
    project: str
    environment: str
    listen: str | None
    config: DeployConfig
    image: str | None  # the release image's id (or tag)
    image_tag: str | None
    image_digest: str | None  # REPO@sha256:... once pushed to a registry, else the image id
    sha: str
    release_id: int
    strategy: str
    step: int
    color: str | None
    address: str | None
    previous_color: str | None
    previous_address: str | None
    action: DeployAction = DeployAction.promote  # stop: remove its containers and route, deploy nothing


def claim(session: Session, deployment_id: int, worker: str) -> Claimed | None:
    """pending -> progressing (or a resumed one taken up) for this worker; None when it is not its
    turn (another deployment of the environment is under way), already taken, over, or no longer
    allowed (the environment's rules changed since, or its listen is where another serves)."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        return None
    environment = _locked(session, deployment.environment_id)
    session.refresh(deployment)
    release = deployment.release
    config = config_of(release)
    declared = config.environments[environment.name]
    used = config.environments[environment.name] = environments.effective(environment, declared)
    if deployment.status == DeploymentStatus.pending:
        if deployment_under_way(session, environment.id, but=deployment.id) is not None:
            return None  # started when the one under way ends
        build = session.get(Build, release.build_id)
        assert build is not None
        # A stop takes down what runs there, whatever the rules and addresses say now.
        why = deployment.action != DeployAction.stop and (
            environments.refusal(environment, environment.name, declared, build)
            or (used.listen and environments.listen_conflict(session, environment.id, used.listen))
        )
        if why:
            _end(deployment, DeploymentStatus.failed, why)
            return None
        deployment.status, deployment.started_at = DeploymentStatus.progressing, utcnow()
        deployment.previous_release_id = environment.release_id
        deployment.previous_color, deployment.previous_address = environment.color, environment.address
        _changed(deployment)
    elif deployment.status != DeploymentStatus.progressing or deployment.worker is not None:
        return None
    deployment.worker = worker
    session.flush()
    project = session.get(Project, deployment.project_id)
    assert project is not None
    return Claimed(
        id=deployment.id,
        project_id=project.id,
        project=project.name,
        environment=environment.name,
        listen=used.listen,
        config=config,
        image=release.image_id or release.image_tag,
        image_tag=release.image_tag,
        image_digest=release.image_digest,
        sha=release.sha,
        release_id=release.id,
        strategy=deployment.strategy,
        step=deployment.step,
        color=deployment.color,
        address=deployment.address,
        previous_color=deployment.previous_color,
        previous_address=deployment.previous_address,
        action=deployment.action,
    )


def _locked(session: Session, environment_id: int) -> Environment:
    """The environment's row, locked for this transaction."""
    # populate_existing: the row may be in the session already, read before another transaction's commit.
    locked = select(Environment).where(Environment.id == environment_id).with_for_update(of=Environment)
    row = session.scalar(locked.execution_options(populate_existing=True))
    assert row is not None  # deployments reference it
    return row


def save_progress(session: Session, deployment_id: int, **values: Any) -> None:
    """Record where the deployment stands (color, address, weight, step) as it moves; a new weight
    or step is an event."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None:
        moved = any(
            key in ("weight", "step") and getattr(deployment, key) != value for key, value in values.items()
        )
        for key, value in values.items():
            setattr(deployment, key, value)
        if moved:
            _changed(deployment)


def add_step(session: Session, deployment_id: int, entry: dict[str, Any]) -> None:
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None:
        deployment.steps = [*deployment.steps, entry]  # a new list, so the JSON column is written


def control_of(session: Session, deployment_id: int) -> tuple[Control | None, str | None]:
    deployment = session.get(Deployment, deployment_id)
    return (deployment.control, deployment.control_by) if deployment else (Control.abort, "its deletion")


def pause(session: Session, deployment_id: int) -> None:
    """The worker leaves a deployment an operator paused; resume hands it to a worker again."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None:
        deployment.status, deployment.worker, deployment.control = DeploymentStatus.paused, None, None
        _changed(deployment)


def finish(
    session: Session, deployment_id: int, status: DeploymentStatus, reason: str | None = None
) -> list[int]:
    """Give the deployment its outcome; a success makes its release the environment's. Returns the
    deployments to start now: the one waiting in this environment, and environments that follow
    this one automatically (`auto` with `after` naming it)."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        return []
    # The project first: a finish locks its environment, then those that follow it, so two of one
    # project's environments finishing at once (production, and qa after it) would each hold the row
    # the other waits for.
    lock_project(session, deployment.project_id)
    if deployment.status.final:
        return []
    environment = _locked(session, deployment.environment_id)
    _end(deployment, status, reason)
    stopped = status == DeploymentStatus.succeeded and deployment.action == DeployAction.stop
    if stopped:  # nothing runs there now; the next promote or auto deploy starts it as a first one
        environment.release_id = environment.color = environment.address = None
        environment.deployed_at = environment.deployed_by = None
    elif status == DeploymentStatus.succeeded:
        environment.release_id, environment.deployed_at = deployment.release_id, deployment.finished_at
        environment.color, environment.address = deployment.color, deployment.address
        environment.deployed_by = deployment.triggered_by
    session.flush()
    start = [d.id for d in _pending(session, environment.id)]
    if status == DeploymentStatus.succeeded and not stopped:
        start += _follow(session, deployment.release, environment.name)
    return start


def stop_of(session: Session, environment: Environment) -> Deployment | None:
    """The stop that left the environment running nothing (who, when), if that is why it runs nothing."""
    if environment.release_id is not None:
        return None
    query = select(Deployment).where(
        Deployment.environment_id == environment.id, Deployment.status == DeploymentStatus.succeeded
    )
    latest = session.scalars(query.order_by(Deployment.id.desc()).limit(1)).first()
    return latest if latest is not None and latest.action == DeployAction.stop else None


def _pending(session: Session, environment_id: int) -> list[Deployment]:
    query = select(Deployment).where(
        Deployment.environment_id == environment_id, Deployment.status == DeploymentStatus.pending
    )
    return list(session.scalars(query.order_by(Deployment.id)))


def _follow(session: Session, release: Release, after: str) -> list[int]:
    """The environments that follow `after` by themselves and take this release."""
    build = session.get(Build, release.build_id)
    assert build is not None
    started = []
    for name, declared in config_of(release).environments.items():
        row = environments.find(session, release.project_id, name, lock=True)
        if row is None or environments.effective(row, declared).after != after:
            continue
        if environments.auto_deploys(row, declared) and not environments.refusal(row, name, declared, build):
            started.append(
                new_deployment(session, release, row, DeployAction.auto, f"auto: after {after}").id
            )
    return started


def request_control(session: Session, deployment: Deployment, action: str, actor: str) -> bool:
    """pause, resume or abort, as an operator asks; False when the deployment's state does not allow it.
    Returns whether a worker must be handed the deployment (resume, or abort of a paused one)."""
    status = deployment.status
    if action == "pause" and status == DeploymentStatus.progressing and deployment.control is None:
        deployment.control, deployment.control_by = Control.pause, actor
        return False
    if action == "resume" and status == DeploymentStatus.paused:
        deployment.status, deployment.worker = DeploymentStatus.progressing, None
        deployment.control = None
        _changed(deployment)
        return True
    if action == "abort" and status == DeploymentStatus.pending:
        _end(deployment, DeploymentStatus.failed, f"aborted by {actor} before it started")
        return False
    if action == "abort" and status in UNDER_WAY:
        deployment.control, deployment.control_by = Control.abort, actor
        if status == DeploymentStatus.paused:
            deployment.status, deployment.worker = DeploymentStatus.progressing, None
            _changed(deployment)
            return True
        return False
    raise DeployRefused(f"deployment {deployment.id} is {status}: it cannot be {_past(action)} now")


def _past(action: str) -> str:
    return {"pause": "paused", "resume": "resumed", "abort": "aborted"}[action]


def hand_back(session: Session, deployment_id: int) -> None:
    """A progressing deployment its worker hands back (it stops): the outbox hands it to another
    worker, which goes on from the recorded step."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None and deployment.status == DeploymentStatus.progressing:
        deployment.worker = None


def hand_back_deployments_of(session: Session, alive: set[str]) -> list[int]:
    """Hand back the progressing deployments whose worker is not among `alive` (it was lost)."""
    query = select(Deployment.id, Deployment.worker).where(
        Deployment.status == DeploymentStatus.progressing, Deployment.worker.is_not(None)
    )
    lost = [deployment_id for deployment_id, worker in session.execute(query) if worker not in alive]
    if lost:
        session.execute(
            update(Deployment)
            .where(
                Deployment.id.in_(lost),
                Deployment.status == DeploymentStatus.progressing,
                Deployment.worker.not_in(alive),
            )
            .values(worker=None)
        )
    return lost


def lost_deployments(session: Session, *, before: datetime) -> list[int]:
    """Deployments waiting for a worker a while: pending with nothing under way in their environment,
    or resumed (progressing, no worker). The queue may have lost them."""
    busy = select(Deployment.environment_id).where(
        (Deployment.status == DeploymentStatus.paused)
        | ((Deployment.status == DeploymentStatus.progressing) & Deployment.worker.is_not(None))
    )
    query = select(Deployment.id).where(
        Deployment.created_at < before,
        Deployment.worker.is_(None),
        Deployment.status.in_((DeploymentStatus.pending, DeploymentStatus.progressing)),
        Deployment.environment_id.not_in(busy),
    )
    return list(session.scalars(query.order_by(Deployment.id).limit(100)))


def list_environments(session: Session, project_id: int) -> list[tuple[Environment, Deployment | None]]:
    """Each environment with its latest deployment, in the order they were first used."""
    rows = session.scalars(
        select(Environment).where(Environment.project_id == project_id).order_by(Environment.id)
    )
    return [(row, latest_deployment(session, row.id)) for row in rows]


def latest_deployment(session: Session, environment_id: int) -> Deployment | None:
    query = select(Deployment).where(Deployment.environment_id == environment_id)
    return session.scalars(query.order_by(Deployment.id.desc()).limit(1)).first()


def list_deployments(
    session: Session, project_id: int | None, environment: str | None, limit: int, offset: int
) -> list[Deployment]:
    query = select(Deployment)
    if project_id is not None:
        query = query.where(Deployment.project_id == project_id)
    if environment is not None:
        query = query.join(Environment, Environment.id == Deployment.environment_id).where(
            Environment.name == environment
        )
    return list(session.scalars(query.order_by(Deployment.id.desc()).limit(limit).offset(offset)))
