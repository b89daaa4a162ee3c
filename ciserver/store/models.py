"""SQLAlchemy 2 models: the state every process shares. Nothing here is SQLite-only."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ciserver.states import BuildSource, Control, DeployAction, DeploymentStatus, Status, When


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back an aware datetime, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Role(enum.IntEnum):
    """API roles, each allowed what the ones below it are."""

    viewer = 1
    developer = 2
    ops = 3
    admin = 4


def _values(kind: type[enum.StrEnum]) -> list[str]:
    return [member.value for member in kind]


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
        # A state column holds its enum's value in a VARCHAR(16), as it did before it was typed: no
        # native enum type and no CHECK constraint, so older databases and their rows fit as they are;
        # a value outside the enum is refused when written, and read back as a member.
        enum.StrEnum: Enum(
            enum.StrEnum, native_enum=False, validate_strings=True, length=16, values_callable=_values
        ),
    }


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    forge: Mapped[str] = mapped_column(String(20))
    repo_url: Mapped[str] = mapped_column(String(2048))
    # The https credentials that were in the clone URL, Fernet-encrypted (see store.clone_credentials).
    repo_credentials: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(1024))
    # None: cancel older builds of a branch on a new push, except on the default branch.
    auto_cancel: Mapped[bool | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Where commit statuses go (None: the forge's public API) and the token they are sent with,
    # Fernet-encrypted (None: statuses are not reported); see ciserver.statuses.
    forge_api_url: Mapped[str | None] = mapped_column(String(2048))
    forge_token: Mapped[str | None] = mapped_column(Text)


class Build(Base):
    __tablename__ = "builds"
    __table_args__ = (
        Index("ix_builds_project_id", "project_id", "id"),
        # A webhook looks for the same push (a replay) by its commit.
        Index("ix_builds_project_sha", "project_id", "sha"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    ref: Mapped[str] = mapped_column(String(1024))
    branch: Mapped[str | None] = mapped_column(String(1024))
    tag: Mapped[str | None] = mapped_column(String(1024))
    sha: Mapped[str] = mapped_column(String(64))
    before: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(255), default="")
    changed_files: Mapped[list[Any] | None]
    default_branch: Mapped[str | None] = mapped_column(String(1024))
    # The pipeline's `environments` and `service`, as loaded when it was planned: what its release
    # is deployed with (None: the pipeline deploys nothing).
    deploy: Mapped[dict[str, Any] | None]
    # A build still `queued` is the outbox: one the queue lost is enqueued again (see ciserver.outbox).
    status: Mapped[Status] = mapped_column(default=Status.queued, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("builds.id"))
    # What started it (a retry keeps its build's), and the variables a manual run or a schedule gave
    # (None for a push): every job gets them, under the CI_* ones.
    source: Mapped[BuildSource] = mapped_column(default=BuildSource.push, server_default=text("'push'"))
    variables: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    project: Mapped[Project] = relationship(lazy="joined")
    jobs: Mapped[list[Job]] = relationship(order_by="Job.position", back_populates="build")
    statuses: Mapped[list[CommitStatus]] = relationship(order_by="CommitStatus.id", viewonly=True)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"), index=True)
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(255))
    stage: Mapped[str] = mapped_column(String(255))
    image: Mapped[str] = mapped_column(String(1024))
    script: Mapped[list[Any]]
    env: Mapped[dict[str, Any]]
    timeout: Mapped[int]
    after: Mapped[list[Any]]
    # Server defaults as well, so that store.upgrade can add these to an older database.
    when: Mapped[When] = mapped_column(default=When.on_success, server_default=text("'on_success'"))
    allow_failure: Mapped[bool] = mapped_column(default=False, server_default=false())
    # What the executor needs beyond the script: services, artifacts, cache, secrets, image_build,
    # resources, user, network, retry, environment; as ciserver.pipeline.JobOptions stores them.
    options: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    attempt: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    # Set when handed to the queue: a queued job without it waits for its `after` jobs or a free slot.
    dispatched_at: Mapped[datetime | None]
    status: Mapped[Status] = mapped_column(default=Status.queued)
    exit_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    # An image_build job's image: its tag, id and digest (the release artifact).
    image_tag: Mapped[str | None] = mapped_column(String(1024))
    image_id: Mapped[str | None] = mapped_column(String(255))
    image_digest: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    build: Mapped[Build] = relationship(back_populates="jobs")


class Artifact(Base):
    """One file a job kept; its bytes live in the artifact store under `storage_key`."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    path: Mapped[str] = mapped_column(String(4096))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)


class LogChunk(Base):
    """A piece of a job's log at rest, when logs are kept in the database (CISERVER_BLOB_STORE):
    at most store.blobs.LOG_PIECE bytes from byte `start` of the log."""

    __tablename__ = "log_chunks"

    job_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Blob(Base):
    """An artifact or cache archive kept in the database; `key` is set once all its chunks are in, so
    a reader finds a whole blob or none."""

    __tablename__ = "blobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str | None] = mapped_column(String(512), unique=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BlobChunk(Base):
    """One piece (store.blobs.CHUNK bytes, the last one less) of a blob, in order of `seq`."""

    __tablename__ = "blob_chunks"

    blob_id: Mapped[int] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class _SecretColumns:
    """What every secret keeps: its name and only its Fernet ciphertext."""

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(255))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Secret(_SecretColumns, Base):
    """A project's secret for any job and any environment (the fallback of a scoped one)."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    environment: ClassVar[str | None] = None


class ScopedSecret(_SecretColumns, Base):
    """A project's secret for one environment: its deployments, and jobs of refs it allows. A table of
    its own, since older databases keep secrets' (project, name) unique and cannot drop that in place."""

    __tablename__ = "scoped_secrets"
    __table_args__ = (UniqueConstraint("project_id", "environment", "name"),)

    environment: Mapped[str] = mapped_column(String(63))  # type: ignore[assignment]


class Release(Base):
    """What a green build yields for its environments: its image (id and digest) and its artifacts."""

    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"), unique=True)
    sha: Mapped[str] = mapped_column(String(64))
    branch: Mapped[str | None] = mapped_column(String(1024))
    tag: Mapped[str | None] = mapped_column(String(1024))
    image_tag: Mapped[str | None] = mapped_column(String(1024))
    image_id: Mapped[str | None] = mapped_column(String(255))
    image_digest: Mapped[str | None] = mapped_column(String(255))
    # The build's environments and service (Build.deploy): what its commit asks; the server's
    # environment rules decide where it may go (see store.environments).
    config: Mapped[dict[str, Any]]
    # Environments its pipeline names that it may not go to, each with why, as decided when it was made.
    refused: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Environment(Base):
    """An environment of a project: the server's settings for it, and what runs there now.

    Its listen, strategy and after are declared by builds of the default branch only; its rules (which
    refs may deploy, whether a promote is required, who may promote) are set by ops, or taken from
    the first declaration. A row an older release made has neither: only the default branch may deploy
    there until that branch declares it.
    """

    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    listen: Mapped[str | None] = mapped_column(String(255))
    # The strategy as pipeline.Strategy dumps it, and the environment a release must succeed in first.
    strategy: Mapped[dict[str, Any] | None]
    after: Mapped[str | None] = mapped_column(String(63))
    declared_at: Mapped[datetime | None]
    declared_by: Mapped[str | None] = mapped_column(String(255))  # "build 12 of main"
    # The refs allowed to deploy: globs as in pipelines.yml; neither: the default branch only.
    branches: Mapped[list[Any] | None]
    tags: Mapped[list[Any] | None]
    require_promote: Mapped[bool | None]  # None: no
    promote_role: Mapped[str | None] = mapped_column(String(16))  # None: ops
    rules_by: Mapped[str | None] = mapped_column(String(255))  # None: no rules set yet
    release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    # The container serving it (blue or green) and its published address; None for script deploys.
    color: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(255))
    deployed_at: Mapped[datetime | None]
    deployed_by: Mapped[str | None] = mapped_column(String(255))

    release: Mapped[Release | None] = relationship(lazy="joined")


class Deployment(Base):
    """One release going to one environment: its steps, weights, analysis and outcome."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_environment", "environment_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    # The release the environment ran when this started: what a roll back returns to.
    previous_release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    action: Mapped[DeployAction]
    strategy: Mapped[str] = mapped_column(String(16))
    status: Mapped[DeploymentStatus] = mapped_column(default=DeploymentStatus.pending, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    # Percent of the traffic the new release has now, and how many of the strategy's steps are done.
    weight: Mapped[int] = mapped_column(default=0)
    step: Mapped[int] = mapped_column(default=0)
    # One entry per step: weight, start, end, requests, errors, error rate, health.
    steps: Mapped[list[Any]] = mapped_column(default=list)
    color: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(255))
    previous_color: Mapped[str | None] = mapped_column(String(16))
    previous_address: Mapped[str | None] = mapped_column(String(255))
    # An operator's request the deploy worker acts on between checks: pause or abort.
    control: Mapped[Control | None]
    control_by: Mapped[str | None] = mapped_column(String(255))
    triggered_by: Mapped[str] = mapped_column(String(255))
    worker: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    project: Mapped[Project] = relationship(lazy="joined")
    environment: Mapped[Environment] = relationship(lazy="joined")
    release: Mapped[Release] = relationship(lazy="joined", foreign_keys=[release_id])


class Delivery(Base):
    """A webhook delivery already turned into a build: a redelivery finds it here."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("forge", "delivery_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    forge: Mapped[str] = mapped_column(String(20))
    delivery_id: Mapped[str] = mapped_column(String(255))
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Token(Base):
    """An API token; only the SHA-256 of the secret part is kept."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class KeyCheck(Base):
    """A known text encrypted with the server's key at first use: tells which key the data is under."""

    __tablename__ = "key_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who changed what, and when: every write, through the API or the CLI, leaves one."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(255))
    target: Mapped[str] = mapped_column(String(1024))
    detail: Mapped[dict[str, Any] | None]


class Event(Base):
    """A build, job or deployment that was created or changed state, written in the same transaction
    as the change: what `GET /api/v1/events` streams, in `id` order, and resumes from (Last-Event-ID)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_project_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    # "build", "job" or "deployment"; `subject_id` is that row's id, `status` its state after the change.
    kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    # What a client shows without asking again (the subject as the API describes it, in short).
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class CommitStatus(Base):
    """A build's commit status in one context, as its forge should show it: the outbox that
    ciserver.statuses sends. Only the newest state of a context is kept, so a state superseded
    before it was sent is never sent; `version` counts the changes, `sent_version` is the forge's."""

    __tablename__ = "commit_statuses"
    __table_args__ = (
        UniqueConstraint("build_id", "context"),
        Index("ix_commit_statuses_due", "sent_version", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("builds.id"))
    context: Mapped[str] = mapped_column(String(255))
    # pending, running, success, failure, error or canceled; each forge says it in its own words.
    state: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(default=1)
    sent_version: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by the API process sending it; another one leaves it alone until then.
    claimed_until: Mapped[datetime | None]
    reported_at: Mapped[datetime | None]
    reported_state: Mapped[str | None] = mapped_column(String(16))
    # Why the last attempt failed; with gave_up, why it is no longer tried.
    error: Mapped[str | None] = mapped_column(Text)
    gave_up: Mapped[bool] = mapped_column(default=False)


class StatusCursor(Base):
    """The newest event whose build the status reporter has looked at (one row)."""

    __tablename__ = "status_cursor"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(default=0)
