"""Artifact rows: what a job kept, which later jobs receive it, and when it expires."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ciserver.store.models import Artifact, Job, utcnow


class KeptFile(Protocol):
    """One collected file (workers.artifacts.StoredFile has these)."""

    path: str
    size: int
    sha256: str
    storage_key: str


def add_artifacts(session: Session, job: Job, files: Iterable[KeptFile], expire_in: int) -> list[Artifact]:
    expires_at = utcnow() + timedelta(seconds=expire_in)
    rows = [
        Artifact(
            build_id=job.build_id,
            job_id=job.id,
            path=f.path,
            size=f.size,
            sha256=f.sha256,
            storage_key=f.storage_key,
            expires_at=expires_at,
        )
        for f in files
    ]
    session.add_all(rows)
    session.flush()
    return rows


def artifacts_of_build(session: Session, build_id: int) -> list[Artifact]:
    return list(session.scalars(select(Artifact).where(Artifact.build_id == build_id).order_by(Artifact.id)))


def artifacts_for_job(session: Session, job: Job) -> list[Artifact]:
    """What the jobs this one comes after kept (its `needs`, or every earlier stage), oldest first,
    so that a later job's file of the same path wins."""
    if not job.after:
        return []
    producers = select(Job.id).where(Job.build_id == job.build_id, Job.name.in_(list(job.after)))
    query = select(Artifact).where(Artifact.job_id.in_(producers), _unexpired())
    return list(session.scalars(query.order_by(Artifact.id)))


def get_artifact(session: Session, artifact_id: int) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.id == artifact_id, _unexpired()))


def expired_artifacts(session: Session, now: datetime | None = None) -> list[Artifact]:
    query = select(Artifact).where(Artifact.expires_at < (now or utcnow()))
    return list(session.scalars(query.limit(1000)))


def forget_artifacts(session: Session, ids: Iterable[int]) -> None:
    session.execute(delete(Artifact).where(Artifact.id.in_(list(ids))))


def _unexpired():
    return (Artifact.expires_at.is_(None)) | (Artifact.expires_at >= utcnow())
