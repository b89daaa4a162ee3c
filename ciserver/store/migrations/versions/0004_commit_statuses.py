"""Commit statuses back to the forge: a project's forge API URL and token, and the statuses outbox.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from ciserver.store.models import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Two nullable columns and two new tables. The cursor starts at the newest event, so builds that
    ended before the upgrade are not reported to their forges now."""
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("forge_api_url", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("forge_token", sa.Text(), nullable=True))
    op.create_table(
        "commit_statuses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("context", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sent_version", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", UTCDateTime(timezone=True), nullable=True),
        sa.Column("reported_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("reported_state", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("gave_up", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("build_id", "context"),
    )
    op.create_index("ix_commit_statuses_due", "commit_statuses", ["sent_version", "next_attempt_at"])
    cursor = op.create_table(
        "status_cursor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    newest = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(id), 0) FROM events")).scalar() or 0
    op.bulk_insert(cursor, [{"id": 1, "event_id": newest}])


def downgrade() -> None:
    op.drop_table("status_cursor")
    op.drop_index("ix_commit_statuses_due", table_name="commit_statuses")
    op.drop_table("commit_statuses")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("forge_token")
        batch.drop_column("forge_api_url")
