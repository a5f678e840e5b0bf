"""review_items.post_json/posted_at: what a held item's post to the moderators shows, stored before it is posted,
and when it was; after a restart, a pending item whose post never reached chat is posted then.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_items") as table:  # SQLite alters tables by copying them: batch mode
        table.add_column(sa.Column("post_json", sa.Text))
        table.add_column(sa.Column("posted_at", sa.DOUBLE_PRECISION))


def downgrade() -> None:
    with op.batch_alter_table("review_items") as table:
        table.drop_column("posted_at")
        table.drop_column("post_json")
