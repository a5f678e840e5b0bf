"""review_items.post_owner/post_lease_until: which process is making an item's post to the moderators, and until
when; another process takes the post over only once that lease has run out (a process sharing the store is
alive, or stopped and handed its posts back), so a post is made by one process, not by every one that restarts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_items") as table:  # SQLite alters tables by copying them: batch mode
        table.add_column(sa.Column("post_owner", sa.Text))
        table.add_column(sa.Column("post_lease_until", sa.DOUBLE_PRECISION))


def downgrade() -> None:
    with op.batch_alter_table("review_items") as table:
        table.drop_column("post_lease_until")
        table.drop_column("post_owner")
