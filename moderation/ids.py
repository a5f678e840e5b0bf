"""Ids for moderation rows: short enough for a moderator to type, or ordered by time for the audit log."""

from __future__ import annotations

import secrets
import time


def new_id(nbytes: int = 5) -> str:
    """A short random id (10 hex characters by default) that moderators can type."""
    return secrets.token_hex(nbytes)


def ordered_id() -> str:
    """An id that sorts by creation time (for the append-only audit log)."""
    return f"{time.time_ns():020d}-{secrets.token_hex(3)}"
