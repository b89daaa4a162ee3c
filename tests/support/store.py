"""Rows in a test's database as the server and workers leave them, and the keys and tokens to read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy.orm import Session

from ciserver.config import Settings
from ciserver.crypto import load_fernet
from ciserver.pipeline import JobOptions, load_pipeline
from ciserver.states import Status
from ciserver.store.db import session_scope
from ciserver.store.dispatch import advance
from ciserver.store.models import Build, Job, Project, Role
from ciserver.store.projects import add_project, get_project
from ciserver.store.tokens import create_token
from ciserver.store.transitions import add_jobs, start_build


def green_build(
    session: Session,
    project: Project,
    pipeline: str,
    *,
    branch: str | None = "main",
    tag: str | None = None,
    status: Status = Status.success,
) -> Build:
    """A build of `pipeline` with its image built, as a worker leaves it: what a release is made of."""
    loaded = load_pipeline(pipeline)
    build = Build(
        project_id=project.id,
        ref=f"refs/heads/{branch}" if branch else f"refs/tags/{tag}",
        branch=branch,
        tag=tag,
        sha=f"{session.query(Build).count():040d}",
        default_branch="main",
        status=status,
        deploy=loaded.model_dump(
            mode="json", include={"environments", "service", "image"}, exclude_none=True
        ),
    )
    session.add(build)
    session.flush()
    image = "sha256:" + "1" * 64
    session.add(
        Job(
            build_id=build.id, position=0, name="package", stage="test", image="", script=[], env={},
            timeout=60, after=[], status=Status.success,
            image_tag="ciserver/octo-app:x", image_id=image, image_digest=image,
        )
    )  # fmt: skip
    session.flush()
    return build


# The data dir of each of the tests' PostgreSQL databases (by database name), where its key file is:
# a PostgreSQL database is in no directory.
DATA_DIRS: dict[str, Path] = {}


def fernet_of(session: Session) -> Fernet:
    """The key of the data dir this session's database belongs to, as the server loads it."""
    url = session.get_bind().url
    assert url.database is not None
    if url.get_backend_name() == "sqlite":
        return load_fernet(Settings(data_dir=Path(url.database).parent))
    return load_fernet(Settings(data_dir=DATA_DIRS[url.database]))


def bearer(settings: Settings, role: Role) -> dict[str, str]:
    """The Authorization header of a new token with this role, made in the settings' database."""
    with session_scope(settings.db_url) as session:
        _, secret = create_token(session, role)
    return {"Authorization": f"Bearer {secret}"}


@dataclass(frozen=True)
class Planned:
    name: str
    after: tuple[str, ...] = ()
    when: str = "on_success"
    allow_failure: bool = False
    options: JobOptions = field(default_factory=JobOptions)
    stage: str = "test"
    image: str = "busybox"
    script: list[str] = field(default_factory=lambda: ["true"])
    env: dict[str, str] = field(default_factory=dict)
    timeout: int = 60


def new_project(session: Session, name: str = "octo/app") -> Project:
    """A GitHub project, with its webhook secret encrypted as the server keeps it."""
    return add_project(
        session, name=name, forge="github", repo_url="https://x.test/r.git", secret="s",
        fernet=fernet_of(session),
    )  # fmt: skip


def new_build(session: Session, plan: list[Planned], concurrency: int = 0) -> tuple[int, list[str]]:
    """A running build of one project with these jobs; its id and the names dispatched at once."""
    project = get_project(session, "octo/app") or new_project(session)
    build = Build(project_id=project.id, ref="refs/heads/main", branch="main", sha="a" * 40)
    session.add(build)
    session.flush()
    start_build(session, build.id)
    add_jobs(session, build.id, plan)
    return build.id, names(session, advance(session, build.id, concurrency))


def names(session: Session, dispatched: list[Any]) -> list[str]:
    return [session.get(Job, d.job_id).name for d in dispatched]  # type: ignore[union-attr]
