"""Pull and merge requests: what a build of a request records (placeholder until its columns land).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
