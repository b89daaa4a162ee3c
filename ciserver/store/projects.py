"""Projects: a forge repository path, where to clone it from and the webhook secret."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ciserver.store.models import Project

FORGE_NAMES = ("github", "gitlab")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+$")


class ProjectError(ValueError):
    """A registration the server refuses; the message names the field."""


def check_project_name(name: str) -> str:
    """The forge's repository path: OWNER/NAME, or GROUP/SUBGROUP/NAME on GitLab."""
    if len(name) > 255 or not _NAME.match(name) or name.endswith(".git"):
        raise ProjectError(f"name: {name!r} is not a repository path like OWNER/NAME")
    return name


def add_project(
    session: Session,
    *,
    name: str,
    forge: str,
    repo_url: str,
    secret: str,
    auto_cancel: bool | None = None,
) -> Project:
    """Register a project; the caller has already checked `repo_url` (see ciserver.clone_urls)."""
    check_project_name(name)
    if forge not in FORGE_NAMES:
        raise ProjectError(f"forge: {forge!r} is not one of {', '.join(FORGE_NAMES)}")
    if not secret:
        raise ProjectError("secret: must not be empty (it signs the forge's webhooks)")
    if get_project(session, name) is not None:
        raise ProjectError(f"name: project {name!r} already exists")
    project = Project(name=name, forge=forge, repo_url=repo_url, secret=secret, auto_cancel=auto_cancel)
    session.add(project)
    session.flush()
    return project


def get_project(session: Session, name: str) -> Project | None:
    """By repository path, ignoring case as GitHub and GitLab do (`Octo/Hello` is `octo/hello`)."""
    return session.scalar(select(Project).where(func.lower(Project.name) == name.lower()))


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))
