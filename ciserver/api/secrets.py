"""Project secrets over HTTP: developers see the names, ops set and remove values; nobody reads one.
A secret may be scoped to one environment (`environment` in the body, `?environment=` to remove it).

Included before the projects router, whose `/projects/{name:path}` would take these paths too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from ciserver.api.deps import (
    DatabaseDep,
    Developer,
    Ops,
    SettingsDep,
    not_found,
    project_or_404,
    server_fernet,
)
from ciserver.store import audit
from ciserver.store.models import Project
from ciserver.store.secrets import (
    AnySecret,
    SecretError,
    delete_secret,
    get_secret,
    list_secrets,
    set_secret,
)

router = APIRouter(prefix="/api/v1/projects", tags=["secrets"])


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(
        description="At least 8 characters (shorter ones cannot be masked in logs), at most 64 KiB.",
        json_schema_extra={"writeOnly": True},
    )
    environment: str | None = Field(
        None,
        description="Only for this environment: its deployments, and jobs with `environment:` of refs "
        "its rules allow. Null: for every job and environment (the fallback of scoped ones).",
    )


class SecretOut(BaseModel):
    name: str = Field(description="The environment variable a job that names it receives.")
    environment: str | None = Field(description="The environment it is scoped to; null: every one.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, secret: AnySecret) -> SecretOut:
        return cls(
            name=secret.name,
            environment=secret.environment,
            created_at=secret.created_at,
            updated_at=secret.updated_at,
        )


@router.get(
    "/{name:repo_path}/secrets", response_model=list[SecretOut], summary="A project's secrets (names only)"
)
def secrets(name: str, _: Developer, db: DatabaseDep) -> list[SecretOut]:
    with db.session() as session:
        return [SecretOut.of(s) for s in list_secrets(session, project_or_404(session, name))]


@router.put(
    "/{name:repo_path}/secrets/{key}",
    response_model=SecretOut,
    summary="Set a secret: 201 when new, 200 when replaced",
    responses={201: {"description": "Created", "model": SecretOut}},
)
def put(
    name: str,
    key: str,
    body: SecretIn,
    caller: Ops,
    db: DatabaseDep,
    settings: SettingsDep,
    response: Response,
) -> SecretOut:
    fernet = server_fernet(settings)
    with db.session() as session:
        project = project_or_404(session, name)
        try:
            created = set_secret(session, project, key, body.value, fernet, body.environment)
        except SecretError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        target = _target(project, key, body.environment)
        audit.record(session, caller.actor, "secret.set", target, {"created": created})
        response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        secret = get_secret(session, project, key, body.environment)
        assert secret is not None  # set in this very transaction
        return SecretOut.of(secret)


@router.delete(
    "/{name:repo_path}/secrets/{key}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a secret"
)
def delete(
    name: str,
    key: str,
    caller: Ops,
    db: DatabaseDep,
    environment: Annotated[
        str | None, Query(description="Remove its value for this environment only.")
    ] = None,
) -> Response:
    with db.session() as session:
        project = project_or_404(session, name)
        try:
            deleted = delete_secret(session, project, key, environment)
        except SecretError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        if not deleted:
            scope = f" for environment {environment!r}" if environment else ""
            raise not_found("secret", f"{key!r}{scope} of project {project.name!r}")
        audit.record(session, caller.actor, "secret.delete", _target(project, key, environment))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _target(project: Project, key: str, environment: str | None) -> str:
    scope = f"/environment:{environment}" if environment else ""
    return f"project:{project.name}{scope}/secret:{key}"
