"""Deployments: their steps, weights and analysis; operators pause, resume or abort one (the
environment's promote role, ops unless its rules say otherwise; written to the audit log)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status
from sqlalchemy.orm import Session

from ciserver.api.deps import (
    MAX_ROW,
    DatabaseDep,
    Developer,
    RowId,
    SettingsDep,
    Viewer,
    enqueue_deployment,
    not_found,
    project_or_404,
    require_promote_role,
)
from ciserver.api.schemas import DeploymentOut
from ciserver.store import audit
from ciserver.store import deployments as store
from ciserver.store.models import Deployment

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])


@router.get("", response_model=list[DeploymentOut], summary="Deployments, newest first")
def deployments(
    _: Viewer,
    db: DatabaseDep,
    project: Annotated[str | None, Query(description="OWNER/NAME")] = None,
    environment: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW)] = 0,
) -> list[DeploymentOut]:
    with db.session() as session:
        project_id = None
        if project is not None:
            project_id = project_or_404(session, project).id
        rows = store.list_deployments(session, project_id, environment, limit, offset)
        return [DeploymentOut.of(d) for d in rows]


@router.get("/{deployment_id}", response_model=DeploymentOut, summary="A deployment: steps, weights, status")
def deployment(deployment_id: RowId, _: Viewer, db: DatabaseDep) -> DeploymentOut:
    with db.session() as session:
        found = _get(session, deployment_id)
        return DeploymentOut.of(found)


@router.post(
    "/{deployment_id}/{action}",
    response_model=DeploymentOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        403: {"description": "The token's role is below the environment's promote_role."},
        409: {"description": "The deployment's state does not allow it."},
    },
    summary="pause (between checks), resume (from its step) or abort (back to the previous release)",
)
def control(
    deployment_id: RowId,
    action: Literal["pause", "resume", "abort"],
    caller: Developer,
    db: DatabaseDep,
    settings: SettingsDep,
) -> DeploymentOut:
    with db.session() as session:
        found = _get(session, deployment_id)
        require_promote_role(session, caller, found.project_id, found.environment.name)
        needs_worker = store.request_control(session, found, action, caller.actor)
        audit.record(
            session,
            caller.actor,
            f"deployment.{action}",
            f"project:{found.project.name}/deployment:{deployment_id}",
        )
        session.flush()
        answer = DeploymentOut.of(found)
    if needs_worker:
        enqueue_deployment(settings, deployment_id)
    return answer


def _get(session: Session, deployment_id: int) -> Deployment:
    found = session.get(Deployment, deployment_id)
    if found is None:
        raise not_found("deployment", deployment_id)
    return found
