"""Removing a project: every row that belongs to it, in one transaction, or nothing.

Refused while the project has something running: a build that is queued or running (a worker would
write to rows that are gone), a deployment under way, or an environment that serves a release (its
containers and route would be left with nobody to stop them). Cancel the builds and stop the
environments first. What is removed cannot be brought back: builds, jobs, their logs and artifacts,
releases, environments, deployments, secrets, deliveries, events and commit statuses. The audit log
keeps its entries, the record of who removed it among them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from ciserver.states import DeploymentStatus, Status
from ciserver.store.models import (
    Artifact,
    Build,
    CommitStatus,
    Delivery,
    Deployment,
    Environment,
    Event,
    Job,
    LogChunk,
    Project,
    Release,
    ScopedSecret,
    Secret,
)
from ciserver.store.projects import ProjectError


class ProjectBusy(ProjectError):
    """The project has builds running or environments deployed: removing it now would strand them."""


@dataclass(frozen=True)
class Removed:
    """What the database no longer holds, for the caller to remove from the log and artifact stores
    once the transaction has committed."""

    builds: int
    job_ids: list[int]
    artifact_keys: list[str]


def remove_project(session: Session, project: Project) -> Removed:
    """Delete the project and all that is its; ProjectBusy (naming what to stop) when it is in use."""
    _check_idle(session, project)
    build_ids = select(Build.id).where(Build.project_id == project.id).scalar_subquery()
    job_ids = list(session.scalars(select(Job.id).where(Job.build_id.in_(build_ids))))
    keys = list(session.scalars(select(Artifact.storage_key).where(Artifact.build_id.in_(build_ids))))
    builds = session.scalar(select(func.count()).where(Build.project_id == project.id)) or 0

    session.execute(delete(Deployment).where(Deployment.project_id == project.id))
    session.execute(delete(Environment).where(Environment.project_id == project.id))
    session.execute(delete(Release).where(Release.project_id == project.id))
    session.execute(delete(Event).where(Event.project_id == project.id))
    session.execute(delete(CommitStatus).where(CommitStatus.build_id.in_(build_ids)))
    session.execute(delete(Delivery).where(Delivery.build_id.in_(build_ids)))
    session.execute(delete(Artifact).where(Artifact.build_id.in_(build_ids)))
    if job_ids:
        session.execute(delete(LogChunk).where(LogChunk.job_id.in_(job_ids)))
        session.execute(delete(Job).where(Job.id.in_(job_ids)))
    # A retry points at the build it retried; both go, so the links are cut first.
    session.execute(Build.__table__.update().where(Build.project_id == project.id).values(retry_of=None))
    session.execute(delete(Build).where(Build.project_id == project.id))
    session.execute(delete(Secret).where(Secret.project_id == project.id))
    session.execute(delete(ScopedSecret).where(ScopedSecret.project_id == project.id))
    session.delete(project)
    session.flush()
    return Removed(builds=builds, job_ids=job_ids, artifact_keys=keys)


def _check_idle(session: Session, project: Project) -> None:
    active = session.scalar(
        select(func.count()).where(
            Build.project_id == project.id, Build.status.in_((Status.queued, Status.running))
        )
    )
    if active:
        raise ProjectBusy(
            f"project {project.name} has {active} build(s) queued or running: cancel them first "
            "(POST /api/v1/builds/ID/cancel)"
        )
    moving = session.scalar(
        select(func.count()).where(
            Deployment.project_id == project.id,
            Deployment.status.not_in([status for status in DeploymentStatus if status.final]),
        )
    )
    deployed = list(
        session.scalars(
            select(Environment.name).where(
                Environment.project_id == project.id,
                or_(Environment.release_id.is_not(None), Environment.address.is_not(None)),
            )
        )
    )
    if moving or deployed:
        where = f"environment(s) {', '.join(sorted(deployed))} still serve a release" if deployed else ""
        under_way = f"{moving} deployment(s) are under way" if moving else ""
        raise ProjectBusy(
            f"project {project.name}: {' and '.join(filter(None, [under_way, where]))}: stop its "
            "environments first, then remove it"
        )
