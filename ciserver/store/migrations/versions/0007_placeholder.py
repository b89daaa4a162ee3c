"""Reserved (placeholder until its columns land).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
