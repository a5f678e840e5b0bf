"""Bring a database to the newest revision, adopting one written before migrations existed.

Runs inside the transaction `Database.connect()` opened (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory
lock), so two processes starting at once migrate one after the other and the second finds nothing to do.
"""

from __future__ import annotations

import logging

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

log = logging.getLogger(__name__)
SCRIPT_LOCATION = "storage:migrations"
BASELINE = "0001"
"""The revision that is exactly the schema written before migrations existed."""
LEGACY_TABLES = frozenset({"jobs", "job_images", "review_items", "audit_log", "strikes", "bans", "intake"})
MIGRATION_LOCK = 7_303_524_113
"""PostgreSQL advisory lock key held while migrating (any constant that nothing else uses)."""


def upgrade(connection: Connection) -> None:
    """Migrate to head on `connection` (a sync connection inside an open transaction)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    config = _config(connection)
    before = current_revision(connection)
    if before is None:
        _adopt_legacy(connection, config)
    command.upgrade(config, "head")
    after = current_revision(connection)
    if after != before:
        log.info("database schema migrated from revision %s to %s", before or "(none)", after)


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _adopt_legacy(connection: Connection, config: Config) -> None:
    """Tables without a version: a file written before migrations. Stamp it at the baseline (all its tables
    there) or run the baseline (only some: its statements are IF NOT EXISTS and add just the missing ones)."""
    present = LEGACY_TABLES & set(inspect(connection).get_table_names())
    if not present:
        return  # an empty database: the normal upgrade creates everything
    if present == LEGACY_TABLES:
        log.info("adopting a database written before migrations: stamped at revision %s", BASELINE)
        command.stamp(config, BASELINE)
    else:
        log.info(
            "adopting a database written before migrations (tables %s): completing revision %s",
            ", ".join(sorted(present)),
            BASELINE,
        )
        command.upgrade(config, BASELINE)


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config
