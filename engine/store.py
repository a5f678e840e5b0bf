"""The durable job store: every accepted job and each state change is written here before it is acknowledged.

`JobStore` is the interface (synchronous; the engine calls it from one dedicated thread, never on the event
loop). `SqliteJobStore` is the embedded default; the schema uses plain portable types so that a PostgreSQL
implementation can follow. `open_store(url)` picks the implementation from `store.url`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.requests import GeneratedImage, GenerationRequest, JobState
from engine.serialize import image_from_dict, image_to_dict, request_from_json, request_to_json

SCHEMA = """
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


@dataclass(frozen=True)
class JobRecord:
    """A job as journaled: enough to run it again (request, seeds, size, steps) or to deliver its result."""

    id: str
    request: GenerationRequest
    seeds: tuple[int, ...]
    width: int
    height: int
    steps: int
    state: JobState
    created_at: float
    images: tuple[GeneratedImage, ...] = ()
    error_kind: str | None = None
    error: str | None = None


class JobStore(Protocol):
    def add(self, record: JobRecord) -> None: ...

    def set_state(self, job_id: str, state: JobState, error_kind: str | None = None,
                  error: str | None = None) -> None: ...

    def set_done(self, job_id: str, images: Sequence[GeneratedImage]) -> None: ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def set_request(self, job_id: str, request: GenerationRequest) -> None: ...

    def in_states(self, states: Sequence[JobState]) -> list[JobRecord]: ...

    def find_image_by_watermark(self, watermark_id: str) -> tuple[str, int] | None: ...

    def close(self) -> None: ...


class SqliteJobStore:
    """SQLite in WAL mode. One connection guarded by a lock: the engine uses one thread, tools may use others."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            path = str(Path(path).expanduser())
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def add(self, record: JobRecord) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, platform, user_key, state, request_json, seeds_json, width, height, steps,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.request.requester.platform, record.request.requester.key, record.state.value,
                 request_to_json(record.request), json.dumps(list(record.seeds)), record.width, record.height,
                 record.steps, record.created_at, now),
            )

    def set_state(self, job_id: str, state: JobState, error_kind: str | None = None,
                  error: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, error_kind = ?, error = ?, updated_at = ? WHERE id = ?",
                (state.value, error_kind, error, time.time(), job_id),
            )

    def set_done(self, job_id: str, images: Sequence[GeneratedImage]) -> None:
        images_json = json.dumps([image_to_dict(image) for image in images])
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE jobs SET state = ?, images_json = ?, updated_at = ? WHERE id = ?",
                (JobState.DONE.value, images_json, time.time(), job_id),
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO job_images (watermark_id, job_id, image_index) VALUES (?, ?, ?)",
                [(image.watermark_id, job_id, image.index) for image in images if image.watermark_id],
            )

    def set_request(self, job_id: str, request: GenerationRequest) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET request_json = ?, updated_at = ? WHERE id = ?",
                             (request_to_json(request), time.time(), job_id))

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row else None

    def in_states(self, states: Sequence[JobState]) -> list[JobRecord]:
        marks = ", ".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY created_at",
                [state.value for state in states],
            ).fetchall()
        return [_record(row) for row in rows]

    def find_image_by_watermark(self, watermark_id: str) -> tuple[str, int] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job_id, image_index FROM job_images WHERE watermark_id = ?", (watermark_id,)
            ).fetchone()
        return (row[0], int(row[1])) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


_COLUMNS = "id, request_json, seeds_json, width, height, steps, state, created_at, images_json, error_kind, error"


def _record(row: tuple) -> JobRecord:
    (job_id, request_json, seeds_json, width, height, steps, state, created_at, images_json, error_kind,
     error) = row
    images = tuple(image_from_dict(item) for item in json.loads(images_json)) if images_json else ()
    return JobRecord(
        id=job_id, request=request_from_json(request_json), seeds=tuple(json.loads(seeds_json)), width=width,
        height=height, steps=steps, state=JobState(state), created_at=created_at, images=images,
        error_kind=error_kind, error=error,
    )


class UnsupportedStore(ValueError):
    pass


def sqlite_path(url: str) -> str:
    """`sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or `sqlite://:memory:` -> a path."""
    if not url.startswith("sqlite://"):
        raise UnsupportedStore(
            f"store.url must start with sqlite:// (PostgreSQL arrives with the scale-out mode), got {url!r}"
        )
    rest = url[len("sqlite://"):]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/"):
        raise UnsupportedStore(f"store.url must look like sqlite:///path/to/file.db, got {url!r}")
    return rest[1:]


def open_store(url: str) -> JobStore:
    return SqliteJobStore(sqlite_path(url))
