"""deliveries.first_failed_at: when a job's posts began to fail, so that delivery gives up after a set time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as table:  # SQLite alters tables by copying them: batch mode
        table.add_column(sa.Column("first_failed_at", sa.DOUBLE_PRECISION))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as table:
        table.drop_column("first_failed_at")
