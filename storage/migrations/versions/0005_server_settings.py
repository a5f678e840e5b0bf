"""server_settings (per-server settings by a server's admins) and jobs.deleted_at/deleted_by (the Delete button).

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_settings",
        sa.Column("platform", sa.Text, primary_key=True),
        sa.Column("server_id", sa.Text, primary_key=True),
        sa.Column("settings_json", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DOUBLE_PRECISION, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
    )
    with op.batch_alter_table("jobs") as table:  # SQLite alters tables by copying them: batch mode
        table.add_column(sa.Column("deleted_at", sa.DOUBLE_PRECISION))
        table.add_column(sa.Column("deleted_by", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.drop_column("deleted_by")
        table.drop_column("deleted_at")
    op.drop_table("server_settings")
