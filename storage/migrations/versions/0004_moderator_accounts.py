"""moderator_accounts: local sign-in accounts for the moderators' dashboard (`imagine mod add NAME`), for
deployments without Discord or Slack sign-in. Only argon2 hashes are stored.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "moderator_accounts",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DOUBLE_PRECISION, nullable=False),
        sa.Column("updated_at", sa.DOUBLE_PRECISION, nullable=False),
        sa.Column("disabled_at", sa.DOUBLE_PRECISION),
    )


def downgrade() -> None:
    op.drop_table("moderator_accounts")
