"""Projects: register a forge repository, list them, show one, change its settings, remove it."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from ciserver.api.deps import Admin, DatabaseDep, SettingsDep, Viewer, project_or_404, server_fernet
from ciserver.api.schemas import ProjectIn, ProjectOut, ProjectUpdate, ProjectUpdated
from ciserver.clone_urls import CloneURLError, check_clone_url
from ciserver.project_files import forget_project_files
from ciserver.store import audit
from ciserver.store.project_removal import ProjectBusy, remove_project
from ciserver.store.projects import (
    ProjectError,
    ProjectExists,
    add_project,
    list_projects,
    update_project,
)

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


@router.post("", response_model=ProjectOut, status_code=status.HTTP_201_CREATED, summary="Register a project")
def create(body: ProjectIn, caller: Admin, db: DatabaseDep, settings: SettingsDep) -> ProjectOut:
    try:
        url = check_clone_url(body.repo, allow_local=settings.allow_local_repos)
        with db.session() as session:
            project = add_project(
                session,
                name=body.name,
                forge=body.forge,
                repo_url=url,
                secret=body.secret,
                fernet=server_fernet(settings),
                auto_cancel=body.auto_cancel,
            )
            audit.record(
                session, caller.actor, "project.create", f"project:{project.name}", {"forge": body.forge}
            )
            return ProjectOut.of(project)
    except (CloneURLError, ProjectError) as exc:
        code = (
            status.HTTP_409_CONFLICT
            if isinstance(exc, ProjectExists)
            else status.HTTP_422_UNPROCESSABLE_CONTENT
        )
        raise HTTPException(code, str(exc)) from None


@router.get("", response_model=list[ProjectOut], summary="All projects")
def projects(_: Viewer, db: DatabaseDep) -> list[ProjectOut]:
    with db.session() as session:
        return [ProjectOut.of(p) for p in list_projects(session)]


@router.get("/{name:path}", response_model=ProjectOut, summary="One project, by OWNER/NAME")
def project(name: str, _: Viewer, db: DatabaseDep) -> ProjectOut:
    with db.session() as session:
        return ProjectOut.of(project_or_404(session, name))


class ProjectRemoved(BaseModel):
    name: str
    builds: int  # how many of its builds went with it


@router.patch(
    "/{name:path}",
    response_model=ProjectUpdated,
    summary="Change a project: its webhook secret, clone URL, forge API URL and token, auto_cancel",
)
def update(
    name: str, body: ProjectUpdate, caller: Admin, db: DatabaseDep, settings: SettingsDep
) -> ProjectUpdated:
    given = body.model_fields_set
    if "secret" in given and body.rotate_secret:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "secret: give a secret or rotate_secret, not both"
        )
    if body.secret is None and "secret" in given:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "secret: cannot be cleared, only changed")
    if body.repo is None and "repo" in given:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "repo: cannot be cleared, only changed")
    made = secrets.token_hex(32) if body.rotate_secret else None
    changes: dict[str, Any] = {
        field: getattr(body, field) for field in ("auto_cancel", "forge_token") if field in given
    }
    if "forge_url" in given:
        changes["forge_api_url"] = body.forge_url
    if made is not None or body.secret is not None:
        changes["secret"] = made or body.secret
    try:
        if body.repo is not None:
            changes["repo_url"] = check_clone_url(body.repo, allow_local=settings.allow_local_repos)
        with db.session() as session:
            project = project_or_404(session, name)
            changed = update_project(session, project, server_fernet(settings), **changes)
            audit.record(
                session, caller.actor, "project.update", f"project:{project.name}", {"changed": changed}
            )
            return ProjectUpdated(**ProjectOut.of(project).model_dump(), secret=made)
    except (CloneURLError, ProjectError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


@router.delete(
    "/{name:path}",
    response_model=ProjectRemoved,
    responses={409: {"description": "builds are queued or running, or an environment is deployed"}},
    summary="Remove a project and everything that is its (builds, logs, artifacts, releases, secrets)",
)
def remove(name: str, caller: Admin, db: DatabaseDep, settings: SettingsDep) -> ProjectRemoved:
    try:
        with db.session() as session:
            project = project_or_404(session, name)
            shown = project.name
            removed = remove_project(session, project)
            audit.record(
                session, caller.actor, "project.remove", f"project:{shown}", {"builds": removed.builds}
            )
    except ProjectBusy as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    forget_project_files(settings, removed)
    return ProjectRemoved(name=shown, builds=removed.builds)
