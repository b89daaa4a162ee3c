"""What started a build (push, pull request, manual run, schedule) and the variables it was given.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Every build so far came from a push: the server default says so for the rows there are."""
    with op.batch_alter_table("builds") as batch:
        batch.add_column(
            sa.Column(
                "source",
                sa.Enum(
                    "push",
                    "pull_request",
                    "manual",
                    "schedule",
                    name="buildsource",
                    native_enum=False,
                    length=16,
                ),
                server_default=sa.text("'push'"),
                nullable=False,
            )
        )
        batch.add_column(sa.Column("variables", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("variables")
        batch.drop_column("source")
