"""The dashboard's pages: builds, a build, a job's log, environments. Each reads the store and renders
a template; a browser without a valid session cookie is sent to /login and back.

The pages' buttons call the JSON API (with the cookie and the CSRF token), so the server refuses a
write to whoever the API refuses it; a button is only left out of a page for a role that would be
refused anyway."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ciserver.api.deps import MAX_ROW, Caller, DatabaseDep, RowId, SettingsDep, caller_of
from ciserver.job_variables import image_ran
from ciserver.states import DeploymentStatus, Status
from ciserver.store.builds import get_build, get_job, list_builds
from ciserver.store.deployments import list_environments
from ciserver.store.environments import promote_role
from ciserver.store.events import last_event_id
from ciserver.store.models import Role
from ciserver.store.projects import get_project, list_projects
from ciserver.store.releases import list_releases
from ciserver.web import views
from ciserver.web.render import page, to_login
from ciserver.web.session import session_token

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50


def _signed_in(request: Request, db: DatabaseDep) -> Caller | None:
    session = session_token(request)
    return caller_of(db, session) if session else None


@router.get("/")
def builds_page(
    request: Request,
    db: DatabaseDep,
    project: str | None = None,
    branch: str | None = None,
    status: str | None = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW)] = 0,
) -> Response:
    caller = _signed_in(request, db)
    if caller is None:
        return to_login(request)
    project, branch, status = project or None, branch or None, status or None
    error = None
    wanted = None
    if status is not None:
        try:
            wanted = Status(status)
        except ValueError:
            error = f"status: one of {', '.join(s.value for s in Status)}"
    with db.session() as session:
        after = last_event_id(session)  # before the reads: the page's stream misses no change after them
        items, total = list_builds(
            session, project=project, branch=branch, status=wanted, limit=PAGE_SIZE, offset=offset
        )
        return page(
            request,
            "builds.html",
            caller,
            builds=items,
            total=total,
            offset=offset,
            page_size=PAGE_SIZE,
            projects=[p.name for p in list_projects(session)],
            statuses=[s.value for s in Status],
            filters={"project": project or "", "branch": branch or "", "status": status or ""},
            error=error,
            first_line=views.first_line,
            events_after=after,
        )


@router.get("/builds/{build_id}")
def build_page(build_id: RowId, request: Request, db: DatabaseDep) -> Response:
    caller = _signed_in(request, db)
    if caller is None:
        return to_login(request)
    with db.session() as session:
        after = last_event_id(session)
        build = get_build(session, build_id)
        if build is None:
            return page(request, "missing.html", caller, 404, what=f"build {build_id}")
        return page(
            request,
            "build.html",
            caller,
            build=build,
            stages=views.stages_of(build),
            waiting={job.id: views.waiting_reason(job, build) for job in build.jobs},
            playable={job.id for job in build.jobs if views.waits_to_be_played(job)},
            may_act=caller.role >= Role.developer,
            events_after=after,
        )


@router.get("/jobs/{job_id}")
def job_page(job_id: RowId, request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    caller = _signed_in(request, db)
    if caller is None:
        return to_login(request)
    with db.session() as session:
        after = last_event_id(session)
        job = get_job(session, job_id)
        if job is None:
            return page(request, "missing.html", caller, 404, what=f"job {job_id}")
        return page(
            request,
            "job.html",
            caller,
            job=job,
            image=image_ran(job, settings.registry),
            build=job.build,
            waiting=views.waiting_reason(job, job.build),
            events_after=after,
        )


@router.get("/environments")
def all_environments_page(request: Request, db: DatabaseDep) -> Response:
    caller = _signed_in(request, db)
    if caller is None:
        return to_login(request)
    with db.session() as session:
        names = [p.name for p in list_projects(session)]
        return page(request, "projects.html", caller, projects=names)


@router.get("/projects/{name:repo_path}/environments")
def environments_page(name: str, request: Request, db: DatabaseDep) -> Response:
    caller = _signed_in(request, db)
    if caller is None:
        return to_login(request)
    with db.session() as session:
        after = last_event_id(session)
        project = get_project(session, name)
        if project is None:
            return page(request, "missing.html", caller, 404, what=f"project {name}")
        releases = list_releases(session, project.id, limit=20)
        rows = []
        for environment, latest in list_environments(session, project.id):
            rows.append(
                {
                    "env": environment,
                    "latest": latest,
                    "under_way": latest is not None and not DeploymentStatus(latest.status).final,
                    "may_act": caller.role >= promote_role(environment),
                    "releases": [r for r in releases if environment.name not in (r.refused or {})],
                }
            )
        return page(
            request, "environments.html", caller, project=project, environments=rows, events_after=after
        )
