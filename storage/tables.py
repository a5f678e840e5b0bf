"""Every table, as SQLAlchemy Core metadata: what the stores query. The migrations create them.

Portable types only (TEXT, INTEGER, DOUBLE PRECISION; no AUTOINCREMENT, no SQLite-only types) so that SQLite and
PostgreSQL run the same migrations. Times are Unix seconds (UTC). Keep this file and the newest migration in step.
"""

from __future__ import annotations

from sqlalchemy import DOUBLE_PRECISION, Column, Index, Integer, MetaData, Table, Text

metadata = MetaData()

# ---- the engine's job journal (engine/store.py) ------------------------------------------------------------

jobs = Table(
    "jobs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("platform", Text, nullable=False),
    Column("user_key", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("request_json", Text, nullable=False),
    Column("seeds_json", Text, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("steps", Integer, nullable=False),
    Column("error_kind", Text),
    Column("error", Text),
    Column("images_json", Text),
    Column("created_at", DOUBLE_PRECISION, nullable=False),
    Column("updated_at", DOUBLE_PRECISION, nullable=False),
    Column("deleted_at", DOUBLE_PRECISION),  # from revision 0005: deleted by its requester or a moderator
    Column("deleted_by", Text),
    Index("jobs_state", "state"),
)

job_images = Table(
    "job_images",
    metadata,
    Column("watermark_id", Text, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("image_index", Integer, nullable=False),
)

# ---- moderation (moderation/review.py, strikes.py, audit.py) -----------------------------------------------

review_items = Table(
    "review_items",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_key", Text, nullable=False),
    Column("platform", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("request_json", Text, nullable=False),
    Column("verdict_json", Text, nullable=False),
    Column("created_at", DOUBLE_PRECISION, nullable=False),
    Column("expires_at", DOUBLE_PRECISION, nullable=False),
    Column("decided_by", Text),
    Column("decided_at", DOUBLE_PRECISION),
    Column("decision_reason", Text),
    Column("claim_token", Text),
    Column("claimed_at", DOUBLE_PRECISION),
    # From revision 0006: what the post to the moderators shows, stored before it is posted, and when it was.
    Column("post_json", Text),
    Column("posted_at", DOUBLE_PRECISION),
    # From revision 0007: the process making that post, and until when no other process may take it over.
    Column("post_owner", Text),
    Column("post_lease_until", DOUBLE_PRECISION),
    Index("review_items_state", "state", "claim_token"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Text, primary_key=True),
    Column("created_at", DOUBLE_PRECISION, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Index("audit_log_target", "target", "created_at"),
)

strikes = Table(
    "strikes",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_key", Text, nullable=False),
    Column("created_at", DOUBLE_PRECISION, nullable=False),
    Column("category", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("cleared_at", DOUBLE_PRECISION),
    Column("cleared_by", Text),
    Index("strikes_user", "user_key", "created_at"),
)

bans = Table(
    "bans",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_key", Text, nullable=False),
    Column("created_at", DOUBLE_PRECISION, nullable=False),
    Column("expires_at", DOUBLE_PRECISION),
    Column("reason", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("pending_review", Integer, nullable=False),
    Column("lifted_at", DOUBLE_PRECISION),
    Column("lifted_by", Text),
    Index("bans_user", "user_key", "lifted_at"),
)

# ---- the chat adapters' durable inbox (bots/intake.py) -----------------------------------------------------

intake = Table(
    "intake",
    metadata,
    Column("key", Text, primary_key=True),
    Column("platform", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("payload_json", Text, nullable=False),
    Column("received_at", DOUBLE_PRECISION, nullable=False),
    Column("started_at", DOUBLE_PRECISION),
    Column("done_at", DOUBLE_PRECISION),
    Index("intake_pending", "platform", "done_at"),
)

# ---- who posts which finished job (storage/deliveries.py), from revision 0002 ------------------------------

deliveries = Table(
    "deliveries",
    metadata,
    Column("job_id", Text, primary_key=True),  # one row per job: the primary key is what makes a claim unique
    Column("platform", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("owner", Text),
    Column("lease_until", DOUBLE_PRECISION),
    Column("attempts", Integer, nullable=False),
    Column("next_retry_at", DOUBLE_PRECISION),
    Column("last_error", Text),
    Column("updated_at", DOUBLE_PRECISION, nullable=False),
    Column("first_failed_at", DOUBLE_PRECISION),  # from revision 0003
    Index("deliveries_due", "platform", "state", "next_retry_at"),
)

# ---- local moderator accounts for the dashboard (bots/web/mod/local_accounts.py), from revision 0004 ---------

moderator_accounts = Table(
    "moderator_accounts",
    metadata,
    Column("name", Text, primary_key=True),
    Column("password_hash", Text, nullable=False),  # argon2id, with its parameters and salt (argon2-cffi's format)
    Column("created_at", DOUBLE_PRECISION, nullable=False),
    Column("updated_at", DOUBLE_PRECISION, nullable=False),
    Column("disabled_at", DOUBLE_PRECISION),
)

# ---- per-server settings made by a server's admins (bots/conversation/servers.py), from revision 0005 --------

server_settings = Table(
    "server_settings",
    metadata,
    Column("platform", Text, primary_key=True),
    Column("server_id", Text, primary_key=True),  # a Discord guild id, a Slack team id
    Column("settings_json", Text, nullable=False),
    Column("updated_at", DOUBLE_PRECISION, nullable=False),
    Column("updated_by", Text, nullable=False),
)
