"""Releases and environments of a project: what each environment runs, its rules (ops set them),
promote (continuous delivery), rollback and stop. Promote and rollback need the environment's promote
role (ops unless its rules say otherwise), stop needs ops; every write is in the audit log.

Included before the projects router, whose `/projects/{name:path}` would take these paths too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from sqlalchemy.orm import Session

from ciserver.api.deps import (
    DatabaseDep,
    Developer,
    Ops,
    SettingsDep,
    Viewer,
    enqueue_deployment,
    project_or_404,
    require_promote_role,
)
from ciserver.api.schemas import (
    DeploymentOut,
    EnvironmentOut,
    PromoteIn,
    ProtectionIn,
    ProtectionOut,
    ReleaseOut,
)
from ciserver.pipeline.environments import ENVIRONMENT_NAME
from ciserver.store import audit
from ciserver.store import releases as store
from ciserver.store.artifacts import artifacts_of_build
from ciserver.store.deployments import list_environments, stop_of
from ciserver.store.environments import find, rules_of
from ciserver.store.environments import protect as store_protect
from ciserver.store.models import Deployment, Environment, Project, Release

router = APIRouter(prefix="/api/v1/projects", tags=["releases"])

EnvironmentPath = Annotated[
    str,
    Path(pattern=f"^{ENVIRONMENT_NAME.pattern}$", description="lowercase letters, digits, '-' and '_'"),
]

_REFUSALS = {
    403: {"description": "The token's role is below the environment's promote_role."},
    404: {"description": "No such project, build or environment."},
    409: {"description": "Not allowed now: not yet succeeded in `after`, another deployment under way, ..."},
}


@router.get("/{name:repo_path}/releases", response_model=list[ReleaseOut], summary="Releases, newest first")
def releases(name: str, _: Viewer, db: DatabaseDep) -> list[ReleaseOut]:
    with db.session() as session:
        project = project_or_404(session, name)
        return [_release(session, r) for r in store.list_releases(session, project.id)]


@router.get(
    "/{name:repo_path}/environments",
    response_model=list[EnvironmentOut],
    summary="Each environment: its rules, the release it runs, since when, by whom, its latest deployment",
)
def environments(name: str, _: Viewer, db: DatabaseDep) -> list[EnvironmentOut]:
    with db.session() as session:
        project = project_or_404(session, name)
        return [
            EnvironmentOut(
                name=row.name,
                listen=row.listen,
                strategy=next(iter(row.strategy or {}), None),
                after=row.after,
                declared_by=row.declared_by,
                protection=ProtectionOut(**rules_of(row)),
                release=_release(session, row.release) if row.release else None,
                since=row.deployed_at,
                deployed_by=row.deployed_by,
                latest_deployment=DeploymentOut.of(latest) if latest else None,
                **_stopped(session, row),
            )
            for row, latest in list_environments(session, project.id)
        ]


def _stopped(session: Session, row: Environment) -> dict[str, object]:
    stop = stop_of(session, row)
    return {"stopped_at": stop.finished_at, "stopped_by": stop.triggered_by} if stop else {}


@router.get(
    "/{name:repo_path}/environments/{environment}/protection",
    response_model=ProtectionOut,
    summary="An environment's rules: the refs that may deploy, whether a promote is required, who may",
)
def protection(name: str, environment: EnvironmentPath, _: Viewer, db: DatabaseDep) -> ProtectionOut:
    with db.session() as session:
        project = project_or_404(session, name)
        return ProtectionOut(**rules_of(find(session, project.id, environment)))


@router.put(
    "/{name:repo_path}/environments/{environment}/protection",
    response_model=ProtectionOut,
    summary="Set an environment's rules (also before any push declares it); those left out stay",
)
def protect(
    name: str, environment: EnvironmentPath, body: ProtectionIn, caller: Ops, db: DatabaseDep
) -> ProtectionOut:
    with db.session() as session:
        project = project_or_404(session, name)
        row = store_protect(session, project, environment, caller.actor, **body.rules())
        rules = rules_of(row)
        target = f"project:{project.name}/environment:{environment}"
        audit.record(session, caller.actor, "environment.protect", target, rules)
        return ProtectionOut(**rules)


@router.post(
    "/{name:repo_path}/environments/{environment}/promote",
    response_model=DeploymentOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_REFUSALS,
    summary="Deploy a build's release to the environment (continuous delivery)",
)
def promote(
    name: str, environment: str, body: PromoteIn, caller: Developer, db: DatabaseDep, settings: SettingsDep
) -> DeploymentOut:
    with db.session() as session:
        project = project_or_404(session, name)
        require_promote_role(session, caller, project.id, environment)
        deployment = store.promote(session, project, environment, body.build_id, caller.actor)
        _audit(session, caller.actor, "environment.promote", project, deployment, build_id=body.build_id)
        answer = DeploymentOut.of(deployment)
    enqueue_deployment(settings, deployment.id)
    return answer


@router.post(
    "/{name:repo_path}/environments/{environment}/rollback",
    response_model=DeploymentOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_REFUSALS,
    summary="Deploy the release the environment ran before, with its strategy",
)
def rollback(
    name: str, environment: str, caller: Developer, db: DatabaseDep, settings: SettingsDep
) -> DeploymentOut:
    with db.session() as session:
        project = project_or_404(session, name)
        require_promote_role(session, caller, project.id, environment)
        deployment = store.rollback(session, project, environment, caller.actor)
        _audit(session, caller.actor, "environment.rollback", project, deployment)
        answer = DeploymentOut.of(deployment)
    enqueue_deployment(settings, deployment.id)
    return answer


@router.post(
    "/{name:repo_path}/environments/{environment}/stop",
    response_model=DeploymentOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_REFUSALS,
    summary="Take the environment down: its containers and its nginx route go; a promote starts it again",
)
def stop(
    name: str, environment: EnvironmentPath, caller: Ops, db: DatabaseDep, settings: SettingsDep
) -> DeploymentOut:
    with db.session() as session:
        project = project_or_404(session, name)
        deployment = store.stop(session, project, environment, caller.actor)
        _audit(session, caller.actor, "environment.stop", project, deployment)
        answer = DeploymentOut.of(deployment)
    enqueue_deployment(settings, deployment.id)  # the deploy worker owns the containers and nginx
    return answer


def _audit(
    session: Session, actor: str, action: str, project: Project, deployment: Deployment, **detail: int
) -> None:
    target = f"project:{project.name}/environment:{deployment.environment.name}"
    audit.record(session, actor, action, target, {"deployment_id": deployment.id, **detail})


def _release(session: Session, release: Release) -> ReleaseOut:
    return ReleaseOut.of(release, artifacts_of_build(session, release.build_id))
