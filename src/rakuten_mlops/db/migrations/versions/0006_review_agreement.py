"""Reviewer agreement: second reviews and the settling of disagreements.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `predictions.second_review` and `feedback.kind` (existing rows: first reviews)."""
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(
            sa.Column("second_review", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="review")
        )


def downgrade() -> None:
    """Drop the columns."""
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("second_review")
