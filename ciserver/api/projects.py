"""Projects: register a forge repository, list them, show one."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from ciserver.api.deps import Admin, DatabaseDep, SettingsDep, Viewer, project_or_404, server_fernet
from ciserver.api.schemas import ProjectIn, ProjectOut
from ciserver.clone_urls import CloneURLError, check_clone_url
from ciserver.store import audit
from ciserver.store.projects import ProjectError, ProjectExists, add_project, list_projects

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
