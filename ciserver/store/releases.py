"""Releases: what a green build yields, and which release an environment is asked to run.

A succeeded build whose pipeline names environments becomes one Release row; the environments that
deploy by themselves get a deployment at once, others wait for a promote; a rollback picks the
release an environment ran before. Where a release may go is the server's to say
(store.environments); the deployments that carry it out are store.deployments'. Each function runs
in the caller's transaction and locks the environment's row before it decides.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ciserver.pipeline import DeployConfig
from ciserver.states import DeployAction, DeploymentStatus, Status
from ciserver.store import environments
from ciserver.store.deployments import (
    DeployRefused,
    DeployTargetMissing,
    config_of,
    deployment_under_way,
    new_deployment,
)
from ciserver.store.environments import on_default_branch
from ciserver.store.models import Build, Deployment, Environment, Job, Project, Release


def deployments_for_green_build(session: Session, build_id: int) -> list[int]:
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
            started.append(
                new_deployment(session, release, row, DeployAction.auto, f"auto: build {build.id}")
            )
    return [deployment.id for deployment in started]


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
            f"the release of build {build_id} has not yet succeeded in {after!r}, which {name!r} comes after"
        )
    _refuse_when_under_way(session, row)
    return new_deployment(session, release, row, DeployAction.promote, actor)


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
    return new_deployment(session, earlier.release, row, DeployAction.rollback, actor)


def stop(session: Session, project: Project, name: str, actor: str) -> Deployment:
    """Take the environment down: a deployment for the deploy worker, which owns the containers and
    nginx, to remove what serves it. Refused while another deployment is under way (abort it first),
    when nothing runs there, and for a script deploy, whose service ciserver does not run."""
    row = environments.find(session, project.id, name, lock=True)
    if row is None:
        raise DeployTargetMissing(f"project {project.name} has no environment {name!r}")
    _refuse_when_under_way(session, row)
    if row.release is None:
        raise DeployRefused(f"environment {name!r} runs nothing: it was never deployed, or is stopped")
    declared = config_of(row.release).environments.get(name)
    if declared is not None and declared.script is not None:
        raise DeployRefused(
            f"environment {name!r} deploys with a script: what it started runs elsewhere, and ciserver "
            "cannot stop it"
        )
    return new_deployment(session, row.release, row, DeployAction.stop, actor)


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
    busy = deployment_under_way(session, environment.id)
    if busy is not None:
        raise DeployRefused(
            f"deployment {busy.id} of {environment.name!r} is {busy.status}: "
            f"wait for it, or abort it with POST /api/v1/deployments/{busy.id}/abort"
        )


def list_releases(session: Session, project_id: int, limit: int = 50) -> list[Release]:
    query = select(Release).where(Release.project_id == project_id).order_by(Release.id.desc())
    return list(session.scalars(query.limit(limit)))
