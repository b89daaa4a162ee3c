"""Reserved for the next column (placeholder until it lands).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
