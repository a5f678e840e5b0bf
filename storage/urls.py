"""`store.url` → the SQLAlchemy URL of an async driver (aiosqlite for SQLite, asyncpg for PostgreSQL).

sqlite:///relative/path.db     sqlite:////absolute/path.db     sqlite://:memory:
postgresql://user:password@host:5432/database      (postgres:// and postgresql+asyncpg:// too)
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from storage.errors import UnsupportedStore

MEMORY = ":memory:"
POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://")
PASSWORD = re.compile(r"(://[^/:@]*):[^@/]*@")


def sqlite_path(url: str) -> str:
    """`sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or `sqlite://:memory:` -> a path."""
    if not url.startswith("sqlite://"):
        raise UnsupportedStore(f"store.url must start with sqlite:// or postgresql://, got {shown(url)!r}")
    rest = url[len("sqlite://") :]
    if rest in (MEMORY, f"/{MEMORY}"):
        return MEMORY
    if not rest.startswith("/") or rest == "/":
        raise UnsupportedStore(f"store.url must look like sqlite:///path/to/file.db, got {url!r}")
    return rest[1:]


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite://")


def driver_url(url: str) -> URL:
    """The URL SQLAlchemy's async engine is built from; raises UnsupportedStore naming the bad value."""
    if is_sqlite(url):
        path = sqlite_path(url)
        return URL.create("sqlite+aiosqlite", database=path if path == MEMORY else str(Path(path).expanduser()))
    if url.startswith(POSTGRES_SCHEMES):
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise UnsupportedStore(
                f"store.url must look like postgresql://user:password@host:5432/database, got {shown(url)!r}"
            ) from None
        return parsed.set(drivername="postgresql+asyncpg")
    raise UnsupportedStore(f"store.url must start with sqlite:// or postgresql://, got {shown(url)!r}")


def shown(url: str) -> str:
    """The URL for messages and logs: a password in it is replaced by ***."""
    return PASSWORD.sub(r"\1:***@", url)
