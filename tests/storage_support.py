"""Databases for the storage tests: a SQLite file written by the code before storage/ existed, and a fresh
PostgreSQL database per test on the local server (dropped afterwards)."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing

import pytest

from engine.requests import GeneratedImage, GenerationRequest, Requester
from engine.serialize import image_to_dict, request_to_json
from moderation.verdict import Action, Verdict

POSTGRES_ADMIN = os.environ.get("IMAGINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""A server where the tests may create and drop databases (trust auth on this machine)."""

# ---- the three SCHEMA strings as they were (engine/store.py, moderation/db.py, bots/intake.py) -------------

LEGACY_JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    user_key TEXT NOT NULL,
    state TEXT NOT NULL,
    request_json TEXT NOT NULL,
    seeds_json TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    error_kind TEXT,
    error TEXT,
    images_json TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS job_images (
    watermark_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    image_index INTEGER NOT NULL
);
"""

LEGACY_MODERATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS review_items (
    id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    platform TEXT NOT NULL,
    state TEXT NOT NULL,
    request_json TEXT NOT NULL,
    verdict_json TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    decided_by TEXT,
    decided_at DOUBLE PRECISION,
    decision_reason TEXT,
    claim_token TEXT,
    claimed_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS review_items_state ON review_items (state, claim_token);
CREATE TABLE IF NOT EXISTS audit_log (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target, created_at);
CREATE TABLE IF NOT EXISTS strikes (
    id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    category TEXT NOT NULL,
    reason TEXT NOT NULL,
    cleared_at DOUBLE PRECISION,
    cleared_by TEXT
);
CREATE INDEX IF NOT EXISTS strikes_user ON strikes (user_key, created_at);
CREATE TABLE IF NOT EXISTS bans (
    id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    pending_review INTEGER NOT NULL,
    lifted_at DOUBLE PRECISION,
    lifted_by TEXT
);
CREATE INDEX IF NOT EXISTS bans_user ON bans (user_key, lifted_at);
"""

LEGACY_INTAKE_SCHEMA = """
CREATE TABLE IF NOT EXISTS intake (
    key TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    done_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS intake_pending ON intake (platform, done_at);
"""

LEGACY_INDEXES = {"jobs_state", "review_items_state", "audit_log_target", "strikes_user", "bans_user", "intake_pending"}
NOW = 1_700_000_000.0
ALICE = Requester(platform="discord", user_id="111", server_id="g1", channel_id="c1", display_name="alice")
REQUEST = GenerationRequest(prompt="a lighthouse at dawn", requester=ALICE, seed=7, delivery={"channel_id": "c1"})
VERDICT = Verdict(Action.REVIEW, ("nudity",), ("nudity or adult content (not explicit): 'nude'",), "nudity")
IMAGE = GeneratedImage(index=0, seed=7, path="out/0.jpg", width=768, height=768, watermark_id="00aa11bb22cc")
# Serialized as that code did (engine/serialize.py and Verdict.to_dict are unchanged).
REQUEST_JSON = request_to_json(REQUEST)
VERDICT_JSON = json.dumps(VERDICT.to_dict())
IMAGES_JSON = json.dumps([image_to_dict(IMAGE)])


def write_legacy_database(path: str, *, schemas: tuple[str, ...] | None = None) -> None:
    """A file as the code before storage/ left it: the SCHEMA strings run with executescript (WAL mode), and one
    job, review item, strike, ban, audit entry and intake row written with that code's own statements."""
    schemas = schemas or (LEGACY_JOBS_SCHEMA, LEGACY_MODERATION_SCHEMA, LEGACY_INTAKE_SCHEMA)
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for schema in schemas:
            db.executescript(schema)
        if LEGACY_JOBS_SCHEMA in schemas:
            db.execute(
                "INSERT INTO jobs (id, platform, user_key, state, request_json, seeds_json, width, height, steps,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ("job-1", "discord", "discord:111", "queued", REQUEST_JSON, "[7, 8, 9, 10]", 768, 768, 4, NOW, NOW),
            )
            db.execute(
                "UPDATE jobs SET state = ?, images_json = ?, updated_at = ? WHERE id = ?",
                ("done", IMAGES_JSON, NOW, "job-1"),
            )
            db.execute(
                "INSERT OR REPLACE INTO job_images (watermark_id, job_id, image_index) VALUES (?, ?, ?)",
                ("00aa11bb22cc", "job-1", 0),
            )
        if LEGACY_MODERATION_SCHEMA in schemas:
            db.execute(
                "INSERT INTO review_items (id, user_key, platform, state, request_json, verdict_json,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ("abcdef0123", "discord:111", "discord", "pending", REQUEST_JSON, VERDICT_JSON, NOW, NOW + 900),
            )
            db.execute(
                "INSERT INTO strikes (id, user_key, created_at, category, reason) VALUES (?, ?, ?, ?, ?)",
                ("strike0001", "discord:111", NOW, "sexual", "porn"),
            )
            db.execute(
                "INSERT INTO bans (id, user_key, created_at, expires_at, reason, created_by, pending_review)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                ("ban0000001", "discord:222", NOW, None, "spam", "cli:root", 0),
            )
            db.execute(
                "INSERT INTO audit_log (id, created_at, actor, action, target, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (f"{int(NOW * 1e9):020d}-a1b2c3", NOW, "cli:root", "ban", "discord:222", "ok", "until lifted: spam"),
            )
        if LEGACY_INTAKE_SCHEMA in schemas:
            db.execute(
                "INSERT OR IGNORE INTO intake (key, platform, kind, payload_json, received_at) VALUES (?, ?, ?, ?, ?)",
                ("slack:command:t1", "slack", "command", json.dumps({"text": "a fox"}), NOW),
            )


def sqlite_objects(path: str) -> tuple[set[str], set[str]]:
    """(tables, indexes) in a SQLite file, read with the standard library."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    return {n for t, n in rows if t == "table"}, {n for t, n in rows if t == "index"}


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test; skipped where no server answers."""
    asyncpg = pytest.importorskip("asyncpg")
    admin_dsn = POSTGRES_ADMIN.replace("postgresql+asyncpg://", "postgresql://")
    try:
        admin = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN} ({exc}); set IMAGINE_TEST_POSTGRES")
    name = f"imagine_test_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
