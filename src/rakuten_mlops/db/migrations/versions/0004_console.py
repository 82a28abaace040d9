"""Review console: corrections keep the code they replaced and can be undone.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `feedback.previous_code` and `feedback.undone_at`."""
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("previous_code", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("undone_at")
        batch.drop_column("previous_code")
