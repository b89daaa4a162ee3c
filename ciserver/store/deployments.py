"""Releases, environments and deployments: what a green build yields, where it may go, and the
record of each deployment, decided in the database so that API and workers agree.

Where a release may go, and with which listen and strategy, is the server's to say (store.environments).
At most one deployment of an environment is under way (progressing or paused); later ones wait
as `pending`, and a newer pending one supersedes an older. Each function runs in the caller's
transaction and locks the environment's row before it decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ciserver.pipeline import DeployConfig
from ciserver.store import environments
from ciserver.store.environments import on_default_branch
from ciserver.store.models import (
    Build,
    Deployment,
    DeploymentStatus,
    Environment,
    Job,
    Project,
    Release,
    Status,
    utcnow,
)

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


def release_build(session: Session, build_id: int) -> list[int]:
    """A succeeded build whose pipeline names environments becomes a release. A build of the default
    branch first declares them (see store.environments); each environment then takes the release or
    refuses it, with why, and those deploying by themselves (auto, no after, no promote required) get
    a deployment at once. Returns the ids of the new deployments. Does nothing twice."""
    build = session.get(Build, build_id)
    if build is None:
        return []
    session.refresh(build)  # its status was just set by an UPDATE statement
    if build.status != Status.success or not build.deploy:
        return []
    if session.scalar(select(Release.id).where(Release.build_id == build_id)) is not None:
        return []
    config = DeployConfig.model_validate(build.deploy)
    if not config.environments:
        return []
    refused: dict[str, str] = {}
    rows: dict[str, Environment | None] = {}
    for name, declared in config.environments.items():
        why = environments.declare(session, build, name, declared) if on_default_branch(build) else None
        rows[name] = environments.find(session, build.project_id, name, lock=True)
        why = why or environments.refusal(rows[name], name, declared, build)
        if why:
            refused[name] = why
    image = session.scalars(
        select(Job)
        .where(Job.build_id == build_id, Job.status == Status.success, Job.image_id.is_not(None))
        .order_by(Job.position.desc())
    ).first()
    release = Release(
        project_id=build.project_id,
        build_id=build.id,
        sha=build.sha,
        branch=build.branch,
        tag=build.tag,
        image_tag=image.image_tag if image else None,
        image_id=image.image_id if image else None,
        image_digest=image.image_digest if image else None,
        config=build.deploy,
        refused=refused,
    )
    session.add(release)
    session.flush()
    started = []
    for name, declared in config.environments.items():
        row = rows[name]
        if name in refused or row is None or not environments.auto_deploys(row, declared):
            continue
        if environments.effective(row, declared).after is None:
            started.append(_new_deployment(session, release, row, "auto", f"auto: build {build.id}"))
    return [deployment.id for deployment in started]


def _new_deployment(
    session: Session, release: Release, environment: Environment, action: str, triggered_by: str
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
    waiting = select(Deployment).where(
        Deployment.environment_id == environment.id,
        Deployment.status == DeploymentStatus.pending,
        Deployment.id != deployment.id,
    )
    for older in session.scalars(waiting):
        _end(older, DeploymentStatus.failed, f"superseded by deployment {deployment.id}")
    return deployment


def _end(deployment: Deployment, status: DeploymentStatus, reason: str | None) -> None:
    deployment.status, deployment.reason = status.value, reason
    deployment.finished_at, deployment.worker = utcnow(), None


def _under_way(session: Session, environment_id: int, but: int | None = None) -> Deployment | None:
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
        .with_for_update()
    )
    if row is None or row.color == color:
        return False
    waiting = select(Deployment.id).where(
        Deployment.environment_id == row.id,
        Deployment.status.in_((DeploymentStatus.pending, *UNDER_WAY)),
    )
    return session.scalar(waiting.limit(1)) is None


def release_of_build(session: Session, project: Project, build_id: int) -> Release:
    release = session.scalar(
        select(Release).where(Release.build_id == build_id, Release.project_id == project.id)
    )
    if release is not None:
        return release
    build = session.get(Build, build_id)
    if build is None or build.project_id != project.id:
        raise DeployTargetMissing(f"build_id: project {project.name} has no build {build_id}")
    if build.status != Status.success:
        raise DeployRefused(f"build {build_id} is {build.status}: only a succeeded build is a release")
    raise DeployRefused(f"build {build_id} made no release: its pipeline names no environment")


def promote(session: Session, project: Project, name: str, build_id: int, actor: str) -> Deployment:
    """Continuous delivery: deploy the release of `build_id` to environment `name`, if the server's
    rules for it take the release's ref (the caller checked the promote role)."""
    release = release_of_build(session, project, build_id)
    declared = config_of(release).environments.get(name)
    if declared is None:
        known = ", ".join(config_of(release).environments) or "none"
        raise DeployTargetMissing(
            f"environment {name!r} is not in build {build_id}'s pipeline (it has {known})"
        )
    build = session.get(Build, build_id)
    assert build is not None
    row = environments.find(session, project.id, name, lock=True)
    why = environments.refusal(row, name, declared, build)
    if why:
        raise DeployRefused(f"build {build_id} cannot go to {name!r}: {why}")
    assert row is not None  # refusal says why when there is none
    after = environments.effective(row, declared).after
    if after is not None and not _succeeded_in(session, release, after):
        raise DeployRefused(
            f"the release of build {build_id} has not yet succeeded in {after!r}, which {name!r} comes after",
        )
    _refuse_when_under_way(session, row)
    return _new_deployment(session, release, row, "promote", actor)


def rollback(session: Session, project: Project, name: str, actor: str) -> Deployment:
    """Deploy the release the environment ran before its current one, with its strategy."""
    row = environments.find(session, project.id, name, lock=True)
    if row is None:
        raise DeployTargetMissing(f"project {project.name} has no environment {name!r}")
    _refuse_when_under_way(session, row)
    earlier = session.scalars(
        select(Deployment)
        .where(
            Deployment.environment_id == row.id,
            Deployment.status == DeploymentStatus.succeeded,
            Deployment.release_id != row.release_id,
        )
        .order_by(Deployment.finished_at.desc(), Deployment.id.desc())
    ).first()
    if row.release_id is None or earlier is None:
        raise DeployRefused(f"environment {name!r} has no earlier release that succeeded there")
    return _new_deployment(session, earlier.release, row, "rollback", actor)


def _succeeded_in(session: Session, release: Release, environment: str) -> bool:
    return (
        session.scalar(
            select(Deployment.id)
            .join(Environment, Environment.id == Deployment.environment_id)
            .where(
                Deployment.release_id == release.id,
                Deployment.status == DeploymentStatus.succeeded,
                Environment.name == environment,
            )
        )
        is not None
    )


def _refuse_when_under_way(session: Session, environment: Environment) -> None:
    busy = _under_way(session, environment.id)
    if busy is not None:
        raise DeployRefused(
            f"deployment {busy.id} of {environment.name!r} is {busy.status}: "
            f"wait for it, or abort it with POST /api/v1/deployments/{busy.id}/abort",
        )


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
    sha: str
    release_id: int
    strategy: str
    step: int
    color: str | None
    address: str | None
    previous_color: str | None
    previous_address: str | None


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
        if _under_way(session, environment.id, but=deployment.id) is not None:
            return None  # started when the one under way ends
        build = session.get(Build, release.build_id)
        assert build is not None
        why = environments.refusal(environment, environment.name, declared, build) or (
            used.listen and environments.listen_conflict(session, environment.id, used.listen)
        )
        if why:
            _end(deployment, DeploymentStatus.failed, why)
            return None
        deployment.status, deployment.started_at = DeploymentStatus.progressing.value, utcnow()
        deployment.previous_release_id = environment.release_id
        deployment.previous_color, deployment.previous_address = environment.color, environment.address
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
        sha=release.sha,
        release_id=release.id,
        strategy=deployment.strategy,
        step=deployment.step,
        color=deployment.color,
        address=deployment.address,
        previous_color=deployment.previous_color,
        previous_address=deployment.previous_address,
    )


def _locked(session: Session, environment_id: int) -> Environment:
    """The environment's row, locked for this transaction."""
    row = session.scalar(select(Environment).where(Environment.id == environment_id).with_for_update())
    assert row is not None  # deployments reference it
    return row


def save_progress(session: Session, deployment_id: int, **values: Any) -> None:
    """Record where the deployment stands (color, address, weight, step) as it moves."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None:
        for key, value in values.items():
            setattr(deployment, key, value)


def add_step(session: Session, deployment_id: int, entry: dict[str, Any]) -> None:
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None:
        deployment.steps = [*deployment.steps, entry]  # a new list, so the JSON column is written


def control_of(session: Session, deployment_id: int) -> tuple[str | None, str | None]:
    deployment = session.get(Deployment, deployment_id)
    return (deployment.control, deployment.control_by) if deployment else ("abort", "its deletion")


def pause(session: Session, deployment_id: int) -> None:
    """The worker lets go of a deployment an operator paused; resume hands it to a worker again."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None:
        deployment.status, deployment.worker, deployment.control = DeploymentStatus.paused.value, None, None


def finish(
    session: Session, deployment_id: int, status: DeploymentStatus, reason: str | None = None
) -> list[int]:
    """Give the deployment its outcome; a success makes its release the environment's. Returns the
    deployments to start now: the one waiting in this environment, and environments that follow
    this one automatically (`auto` with `after` naming it)."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is None or DeploymentStatus(deployment.status).final:
        return []
    environment = _locked(session, deployment.environment_id)
    _end(deployment, status, reason)
    if status == DeploymentStatus.succeeded:
        environment.release_id, environment.deployed_at = deployment.release_id, deployment.finished_at
        environment.color, environment.address = deployment.color, deployment.address
        environment.deployed_by = deployment.triggered_by
    session.flush()
    start = [d.id for d in _pending(session, environment.id)]
    if status == DeploymentStatus.succeeded:
        start += _follow(session, deployment.release, environment.name)
    return start


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
            started.append(_new_deployment(session, release, row, "auto", f"auto: after {after}").id)
    return started


def request_control(session: Session, deployment: Deployment, action: str, actor: str) -> bool:
    """pause, resume or abort, as an operator asks; False when the deployment's state does not allow it.
    Returns whether a worker must be handed the deployment (resume, or abort of a paused one)."""
    status = DeploymentStatus(deployment.status)
    if action == "pause" and status == DeploymentStatus.progressing and deployment.control is None:
        deployment.control, deployment.control_by = "pause", actor
        return False
    if action == "resume" and status == DeploymentStatus.paused:
        deployment.status, deployment.worker = DeploymentStatus.progressing.value, None
        deployment.control = None
        return True
    if action == "abort" and status == DeploymentStatus.pending:
        _end(deployment, DeploymentStatus.failed, f"aborted by {actor} before it started")
        return False
    if action == "abort" and status in UNDER_WAY:
        deployment.control, deployment.control_by = "abort", actor
        if status == DeploymentStatus.paused:
            deployment.status, deployment.worker = DeploymentStatus.progressing.value, None
            return True
        return False
    raise DeployRefused(f"deployment {deployment.id} is {status}: it cannot be {_past(action)} now")


def _past(action: str) -> str:
    return {"pause": "paused", "resume": "resumed", "abort": "aborted"}[action]


def let_go(session: Session, deployment_id: int) -> None:
    """A progressing deployment its worker leaves (it stops): the outbox hands it to another
    worker, which goes on from the recorded step."""
    deployment = session.get(Deployment, deployment_id)
    if deployment is not None and deployment.status == DeploymentStatus.progressing:
        deployment.worker = None


def release_deployments_of(session: Session, alive: set[str]) -> list[int]:
    """Let go of the progressing deployments whose worker is not among `alive` (it was lost)."""
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


def list_releases(session: Session, project_id: int, limit: int = 50) -> list[Release]:
    query = select(Release).where(Release.project_id == project_id).order_by(Release.id.desc())
    return list(session.scalars(query.limit(limit)))


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
