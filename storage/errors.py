"""The storage layer's exceptions: callers catch `StorageError` for anything the database could not do."""

from __future__ import annotations


class StorageError(Exception):
    """The database could not be opened, migrated or written; the message says which and why."""


class UnsupportedStore(StorageError, ValueError):
    """`store.url` names no database this service can use."""


class NotOpen(StorageError, RuntimeError):
    """The database was used before `connect()` or after `close()`."""
