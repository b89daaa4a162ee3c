"""Rows in a test's database as the server and workers leave them, and the keys and tokens to read them."""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy.orm import Session

from ciserver.config import Settings
from ciserver.crypto import load_fernet
from ciserver.pipeline import load_pipeline
from ciserver.states import Status
from ciserver.store.db import session_scope
from ciserver.store.models import Build, Job, Project, Role
from ciserver.store.tokens import create_token


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


def fernet_of(session: Session) -> Fernet:
    """The key of the data dir this session's database is in, as the server loads it."""
    database = session.get_bind().url.database
    assert database is not None
    return load_fernet(Settings(data_dir=Path(database).parent))


def bearer(settings: Settings, role: Role) -> dict[str, str]:
    """The Authorization header of a new token with this role, made in the settings' database."""
    with session_scope(settings.db_url) as session:
        _, secret = create_token(session, role)
    return {"Authorization": f"Bearer {secret}"}
