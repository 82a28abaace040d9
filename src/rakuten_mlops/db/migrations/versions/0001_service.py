"""Prediction service: predictions and feedback.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `predictions` and `feedback`."""
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("productid", sa.String(64), nullable=True),
        sa.Column("imageid", sa.String(64), nullable=True),
        sa.Column("designation", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("has_image", sa.Boolean(), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("image_path", sa.Text(), nullable=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("model_alias", sa.String(64), nullable=True),
        sa.Column("variant", sa.String(16), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("prdtypecode", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("top3", sa.JSON(), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("username", sa.String(150), nullable=True),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])
    op.create_index("ix_predictions_variant", "predictions", ["variant"])
    op.create_index("ix_predictions_prdtypecode", "predictions", ["prdtypecode"])
    op.create_index("ix_predictions_needs_review", "predictions", ["needs_review"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "prediction_id",
            sa.String(32),
            sa.ForeignKey("predictions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("prdtypecode", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(150), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_prediction_id", "feedback", ["prediction_id"])


def downgrade() -> None:
    """Drop `feedback` and `predictions`."""
    op.drop_index("ix_feedback_prediction_id", table_name="feedback")
    op.drop_table("feedback")
    for index in ("needs_review", "prdtypecode", "variant", "request_id", "created_at"):
        op.drop_index(f"ix_predictions_{index}", table_name="predictions")
    op.drop_table("predictions")
