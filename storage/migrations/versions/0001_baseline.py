"""The schema as it was before migrations: jobs, job_images, review_items, audit_log, strikes, bans, intake.

Exactly the tables and indexes the three SCHEMA strings of engine/store.py, moderation/db.py and bots/intake.py
created. Every statement is IF NOT EXISTS: a database written before migrations may hold only the tables of
the layers that opened it (say `imagine review` alone), and upgrading it to here adds the missing ones.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TEXT, INTEGER, DOUBLE = sa.Text, sa.Integer, sa.DOUBLE_PRECISION


def _table(name: str, *columns: sa.Column, indexes: dict[str, list[str]]) -> None:
    op.create_table(name, *columns, if_not_exists=True)
    for index, names in indexes.items():
        op.create_index(index, name, names, if_not_exists=True)


def upgrade() -> None:
    _table(
        "jobs",
        sa.Column("id", TEXT, primary_key=True),
        sa.Column("platform", TEXT, nullable=False),
        sa.Column("user_key", TEXT, nullable=False),
        sa.Column("state", TEXT, nullable=False),
        sa.Column("request_json", TEXT, nullable=False),
        sa.Column("seeds_json", TEXT, nullable=False),
        sa.Column("width", INTEGER, nullable=False),
        sa.Column("height", INTEGER, nullable=False),
        sa.Column("steps", INTEGER, nullable=False),
        sa.Column("error_kind", TEXT),
        sa.Column("error", TEXT),
        sa.Column("images_json", TEXT),
        sa.Column("created_at", DOUBLE, nullable=False),
        sa.Column("updated_at", DOUBLE, nullable=False),
        indexes={"jobs_state": ["state"]},
    )
    _table(
        "job_images",
        sa.Column("watermark_id", TEXT, primary_key=True),
        sa.Column("job_id", TEXT, nullable=False),
        sa.Column("image_index", INTEGER, nullable=False),
        indexes={},
    )
    _table(
        "review_items",
        sa.Column("id", TEXT, primary_key=True),
        sa.Column("user_key", TEXT, nullable=False),
        sa.Column("platform", TEXT, nullable=False),
        sa.Column("state", TEXT, nullable=False),
        sa.Column("request_json", TEXT, nullable=False),
        sa.Column("verdict_json", TEXT, nullable=False),
        sa.Column("created_at", DOUBLE, nullable=False),
        sa.Column("expires_at", DOUBLE, nullable=False),
        sa.Column("decided_by", TEXT),
        sa.Column("decided_at", DOUBLE),
        sa.Column("decision_reason", TEXT),
        sa.Column("claim_token", TEXT),
        sa.Column("claimed_at", DOUBLE),
        indexes={"review_items_state": ["state", "claim_token"]},
    )
    _table(
        "audit_log",
        sa.Column("id", TEXT, primary_key=True),
        sa.Column("created_at", DOUBLE, nullable=False),
        sa.Column("actor", TEXT, nullable=False),
        sa.Column("action", TEXT, nullable=False),
        sa.Column("target", TEXT, nullable=False),
        sa.Column("outcome", TEXT, nullable=False),
        sa.Column("detail", TEXT, nullable=False),
        indexes={"audit_log_target": ["target", "created_at"]},
    )
    _table(
        "strikes",
        sa.Column("id", TEXT, primary_key=True),
        sa.Column("user_key", TEXT, nullable=False),
        sa.Column("created_at", DOUBLE, nullable=False),
        sa.Column("category", TEXT, nullable=False),
        sa.Column("reason", TEXT, nullable=False),
        sa.Column("cleared_at", DOUBLE),
        sa.Column("cleared_by", TEXT),
        indexes={"strikes_user": ["user_key", "created_at"]},
    )
    _table(
        "bans",
        sa.Column("id", TEXT, primary_key=True),
        sa.Column("user_key", TEXT, nullable=False),
        sa.Column("created_at", DOUBLE, nullable=False),
        sa.Column("expires_at", DOUBLE),
        sa.Column("reason", TEXT, nullable=False),
        sa.Column("created_by", TEXT, nullable=False),
        sa.Column("pending_review", INTEGER, nullable=False),
        sa.Column("lifted_at", DOUBLE),
        sa.Column("lifted_by", TEXT),
        indexes={"bans_user": ["user_key", "lifted_at"]},
    )
    _table(
        "intake",
        sa.Column("key", TEXT, primary_key=True),
        sa.Column("platform", TEXT, nullable=False),
        sa.Column("kind", TEXT, nullable=False),
        sa.Column("payload_json", TEXT, nullable=False),
        sa.Column("received_at", DOUBLE, nullable=False),
        sa.Column("started_at", DOUBLE),
        sa.Column("done_at", DOUBLE),
        indexes={"intake_pending": ["platform", "done_at"]},
    )


def downgrade() -> None:
    for name in ("intake", "bans", "strikes", "audit_log", "review_items", "job_images", "jobs"):
        op.drop_table(name)
