"""The store for the CLI's commands that work on the database: opened, handed to the command, closed."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

from bots.cli import EXIT_FAILURE
from bots.errors import UsageError
from config.settings import Settings
from storage.database import Database
from storage.errors import StorageError, UnsupportedStore


async def with_database(settings: Settings, work: Callable[[Database], Awaitable[int]]) -> int:
    """Run `work` on the configured store: an unsupported URL is a usage error (exit 2), a store that cannot be
    opened one line on stderr (exit 1); the database is closed whatever `work` does."""
    try:
        database = await Database.open(settings.store.url)
    except UnsupportedStore as exc:
        raise UsageError(str(exc)) from None
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        return await work(database)
    finally:
        await database.close()
