"""deliveries: one row per finished job being posted to chat (claim with a lease, retries with backoff).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("platform", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("owner", sa.Text),
        sa.Column("lease_until", sa.DOUBLE_PRECISION),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_retry_at", sa.DOUBLE_PRECISION),
        sa.Column("last_error", sa.Text),
        sa.Column("updated_at", sa.DOUBLE_PRECISION, nullable=False),
    )
    op.create_index("deliveries_due", "deliveries", ["platform", "state", "next_retry_at"])


def downgrade() -> None:
    op.drop_index("deliveries_due", table_name="deliveries")
    op.drop_table("deliveries")
