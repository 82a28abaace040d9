"""Monitoring: drift runs.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create `drift_runs`."""
    op.create_table(
        "drift_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_rows", sa.Integer(), nullable=False),
        sa.Column("reference_rows", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("model_uri", sa.Text(), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("dataset_drift", sa.Boolean(), nullable=False),
        sa.Column("drift_share", sa.Float(), nullable=False),
        sa.Column("drifted_columns", sa.JSON(), nullable=False),
        sa.Column("column_scores", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("report_html", sa.Text(), nullable=True),
        sa.Column("report_json", sa.Text(), nullable=True),
    )
    op.create_index("ix_drift_runs_created_at", "drift_runs", ["created_at"])


def downgrade() -> None:
    """Drop `drift_runs`."""
    op.drop_index("ix_drift_runs_created_at", table_name="drift_runs")
    op.drop_table("drift_runs")
