"""Baseline: the schema of the last release before migrations, as Base.metadata made it then.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

A database from that release (no alembic_version table) is adopted by `ciserver db upgrade`
(store.schema) rather than made again by this revision.
"""

import sqlalchemy as sa
from alembic import op

from ciserver.store.models import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _state(name: str, *values: str) -> sa.Enum:
    """A state column as the models make it: the names as text, no CHECK, so no old row can break one."""
    return sa.Enum(*values, name=name, native_enum=False, length=16)


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", sa.Integer(), nullable=False)


def _moment(name: str, *, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Make every table, with its indexes and constraints."""
    op.create_table(
        "audit_log",
        _id(),
        _moment("at", nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=255), nullable=False),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "key_check",
        _id(),
        sa.Column("token", sa.Text(), nullable=False),
        _moment("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "projects",
        _id(),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("forge", sa.String(length=20), nullable=False),
        sa.Column("repo_url", sa.String(length=2048), nullable=False),
        sa.Column("repo_credentials", sa.Text(), nullable=True),
        sa.Column("secret", sa.String(length=1024), nullable=False),
        sa.Column("auto_cancel", sa.Boolean(), nullable=True),
        _moment("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "tokens",
        _id(),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _moment("created_at", nullable=False),
        _moment("expires_at"),
        _moment("revoked_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "builds",
        _id(),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=1024), nullable=False),
        sa.Column("branch", sa.String(length=1024), nullable=True),
        sa.Column("tag", sa.String(length=1024), nullable=True),
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.Column("before", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("author", sa.String(length=255), nullable=False),
        sa.Column("changed_files", sa.JSON(), nullable=True),
        sa.Column("default_branch", sa.String(length=1024), nullable=True),
        sa.Column("deploy", sa.JSON(), nullable=True),
        sa.Column(
            "status",
            _state("status", "queued", "running", "success", "failed", "error", "canceled", "skipped"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("retry_of", sa.Integer(), nullable=True),
        _moment("created_at", nullable=False),
        _moment("started_at"),
        _moment("finished_at"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["retry_of"], ["builds.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_builds_project_id", "builds", ["project_id", "id"])
    op.create_index("ix_builds_project_sha", "builds", ["project_id", "sha"])
    op.create_index("ix_builds_status", "builds", ["status"])
    op.create_table(
        "scoped_secrets",
        sa.Column("environment", sa.String(length=63), nullable=False),
        _id(),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        _moment("created_at", nullable=False),
        _moment("updated_at", nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "environment", "name"),
    )
    op.create_table(
        "secrets",
        _id(),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        _moment("created_at", nullable=False),
        _moment("updated_at", nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_table(
        "deliveries",
        _id(),
        sa.Column("forge", sa.String(length=20), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        _moment("created_at", nullable=False),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("forge", "delivery_id"),
    )
    op.create_table(
        "jobs",
        _id(),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("stage", sa.String(length=255), nullable=False),
        sa.Column("image", sa.String(length=1024), nullable=False),
        sa.Column("script", sa.JSON(), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("after", sa.JSON(), nullable=False),
        sa.Column(
            "when",
            sa.Enum(
                "on_success", "on_failure", "always", "manual", name="when", native_enum=False, length=16
            ),
            server_default=sa.text("'on_success'"),
            nullable=False,
        ),
        sa.Column("allow_failure", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("options", sa.JSON(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False),
        _moment("dispatched_at"),
        sa.Column(
            "status",
            _state("status", "queued", "running", "success", "failed", "error", "canceled", "skipped"),
            nullable=False,
        ),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("image_tag", sa.String(length=1024), nullable=True),
        sa.Column("image_id", sa.String(length=255), nullable=True),
        sa.Column("image_digest", sa.String(length=255), nullable=True),
        _moment("started_at"),
        _moment("finished_at"),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_jobs_build_id", "jobs", ["build_id"])
    op.create_table(
        "releases",
        _id(),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.Column("branch", sa.String(length=1024), nullable=True),
        sa.Column("tag", sa.String(length=1024), nullable=True),
        sa.Column("image_tag", sa.String(length=1024), nullable=True),
        sa.Column("image_id", sa.String(length=255), nullable=True),
        sa.Column("image_digest", sa.String(length=255), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("refused", sa.JSON(), nullable=True),
        _moment("created_at", nullable=False),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"]),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("build_id"),
    )
    op.create_index("ix_releases_project_id", "releases", ["project_id"])
    op.create_table(
        "artifacts",
        _id(),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=4096), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        _moment("created_at", nullable=False),
        _moment("expires_at"),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_artifacts_build_id", "artifacts", ["build_id"])
    op.create_index("ix_artifacts_expires_at", "artifacts", ["expires_at"])
    op.create_index("ix_artifacts_job_id", "artifacts", ["job_id"])
    op.create_table(
        "environments",
        _id(),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("listen", sa.String(length=255), nullable=True),
        sa.Column("strategy", sa.JSON(), nullable=True),
        sa.Column("after", sa.String(length=63), nullable=True),
        _moment("declared_at"),
        sa.Column("declared_by", sa.String(length=255), nullable=True),
        sa.Column("branches", sa.JSON(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=True),
        sa.Column("require_promote", sa.Boolean(), nullable=True),
        sa.Column("promote_role", sa.String(length=16), nullable=True),
        sa.Column("rules_by", sa.String(length=255), nullable=True),
        sa.Column("release_id", sa.Integer(), nullable=True),
        sa.Column("color", sa.String(length=16), nullable=True),
        sa.Column("address", sa.String(length=255), nullable=True),
        _moment("deployed_at"),
        sa.Column("deployed_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_table(
        "deployments",
        _id(),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("previous_release_id", sa.Integer(), nullable=True),
        sa.Column(
            "action",
            sa.Enum("auto", "promote", "rollback", name="deployaction", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column(
            "status",
            _state(
                "deploymentstatus", "pending", "progressing", "paused", "succeeded", "failed", "rolled_back"
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("color", sa.String(length=16), nullable=True),
        sa.Column("address", sa.String(length=255), nullable=True),
        sa.Column("previous_color", sa.String(length=16), nullable=True),
        sa.Column("previous_address", sa.String(length=255), nullable=True),
        sa.Column(
            "control",
            sa.Enum("pause", "abort", "hand_back", name="control", native_enum=False, length=16),
            nullable=True,
        ),
        sa.Column("control_by", sa.String(length=255), nullable=True),
        sa.Column("triggered_by", sa.String(length=255), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        _moment("created_at", nullable=False),
        _moment("started_at"),
        _moment("finished_at"),
        sa.ForeignKeyConstraint(["environment_id"], ["environments.id"]),
        sa.ForeignKeyConstraint(["previous_release_id"], ["releases.id"]),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deployments_environment", "deployments", ["environment_id", "status"])
    op.create_index("ix_deployments_status", "deployments", ["status"])


def downgrade() -> None:
    """Drop every table, the newest first (their indexes go with them)."""
    for table in (
        "deployments",
        "environments",
        "artifacts",
        "releases",
        "jobs",
        "deliveries",
        "secrets",
        "scoped_secrets",
        "builds",
        "tokens",
        "projects",
        "key_check",
        "audit_log",
    ):
        op.drop_table(table)
