"""The durable job store: every accepted job and each state change is written here before it is acknowledged.

`JobStore(database)` keeps the `jobs` and `job_images` tables (storage/tables.py) on a shared, open
`storage.Database`; its methods are coroutines that never block the event loop (aiosqlite / asyncpg).
`await JobStore.open(url)` is the stand-alone form (tools, an engine started without a store): it opens a
database of its own and `close()` closes it; a store given a database leaves closing it to its owner.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Row, select, update

from engine.requests import GeneratedImage, GenerationRequest, JobState
from engine.serialize import image_from_dict, image_to_dict, request_from_json, request_to_json
from storage.database import Database
from storage.tables import job_images, jobs


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
    deleted_at: float | None = None
    """When its requester or a moderator deleted it (its images are gone from disk and from chat)."""

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


COLUMNS = (
    jobs.c.id,
    jobs.c.request_json,
    jobs.c.seeds_json,
    jobs.c.width,
    jobs.c.height,
    jobs.c.steps,
    jobs.c.state,
    jobs.c.created_at,
    jobs.c.images_json,
    jobs.c.error_kind,
    jobs.c.error,
    jobs.c.deleted_at,
)


class JobStore:
    def __init__(self, database: Database, *, owns_database: bool = False) -> None:
        self.database = database
        self._owns_database = owns_database

    @classmethod
    async def open(cls, url: str) -> JobStore:
        """A store on a database of its own (opened and migrated now, closed by `close()`)."""
        return cls(await Database.open(url), owns_database=True)

    async def add(self, record: JobRecord) -> None:
        requester = record.request.requester
        await self.database.run(
            jobs.insert().values(
                id=record.id,
                platform=requester.platform,
                user_key=requester.key,
                state=record.state.value,
                request_json=request_to_json(record.request),
                seeds_json=json.dumps(list(record.seeds)),
                width=record.width,
                height=record.height,
                steps=record.steps,
                created_at=record.created_at,
                updated_at=time.time(),
            )
        )

    async def set_state(
        self, job_id: str, state: JobState, error_kind: str | None = None, error: str | None = None
    ) -> None:
        await self._update(job_id, state=state.value, error_kind=error_kind, error=error)

    async def set_done(self, job_id: str, images: Sequence[GeneratedImage]) -> None:
        """The result and its watermark ids in one transaction: `imagine verify` never finds half of it."""
        images_json = json.dumps([image_to_dict(image) for image in images])
        marked = [
            {"watermark_id": image.watermark_id, "job_id": job_id, "image_index": image.index}
            for image in images
            if image.watermark_id
        ]
        async with self.database.write() as db:
            await db.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(state=JobState.DONE.value, images_json=images_json, updated_at=time.time())
            )
            if marked:
                insert = self.database.insert(job_images)
                await db.execute(
                    insert.on_conflict_do_update(
                        index_elements=[job_images.c.watermark_id],
                        set_={"job_id": insert.excluded.job_id, "image_index": insert.excluded.image_index},
                    ),
                    marked,
                )

    async def set_request(self, job_id: str, request: GenerationRequest) -> None:
        await self._update(job_id, request_json=request_to_json(request))

    async def merge_delivery(self, record: JobRecord, changes: dict[str, Any]) -> GenerationRequest | None:
        """Journal `changes` merged into the job's delivery context (where its status message is, so that after a
        restart the adapter edits that message instead of posting another). The new request, or None when
        nothing changed."""
        delivery = {**record.request.delivery, **changes}
        if delivery == record.request.delivery:
            return None
        request = replace(record.request, delivery=delivery)
        await self.set_request(record.id, request)
        return request

    async def mark_deleted(self, job_id: str, by: str) -> bool:
        """Record that the job was deleted (the caller removes its files); False if it already was, or is unknown."""
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.deleted_at.is_(None))
            .values(deleted_at=time.time(), deleted_by=by, updated_at=time.time())
        )
        return await self.database.run(statement) > 0

    async def get(self, job_id: str) -> JobRecord | None:
        async with self.database.read() as db:
            row = (await db.execute(select(*COLUMNS).where(jobs.c.id == job_id))).first()
        return _record(row) if row else None

    async def in_states(self, states: Sequence[JobState]) -> list[JobRecord]:
        query = select(*COLUMNS).where(jobs.c.state.in_([s.value for s in states])).order_by(jobs.c.created_at)
        async with self.database.read() as db:
            rows = (await db.execute(query)).all()
        return [_record(row) for row in rows]

    async def find_image_by_watermark(self, watermark_id: str) -> tuple[str, int] | None:
        query = select(job_images.c.job_id, job_images.c.image_index).where(job_images.c.watermark_id == watermark_id)
        async with self.database.read() as db:
            row = (await db.execute(query)).first()
        return (row.job_id, int(row.image_index)) if row else None

    async def close(self) -> None:
        if self._owns_database:
            await self.database.close()

    async def _update(self, job_id: str, **values: object) -> None:
        await self.database.run(update(jobs).where(jobs.c.id == job_id).values(**values, updated_at=time.time()))


def _record(row: Row) -> JobRecord:
    images = tuple(image_from_dict(item) for item in json.loads(row.images_json)) if row.images_json else ()
    return JobRecord(
        id=row.id,
        request=request_from_json(row.request_json),
        seeds=tuple(json.loads(row.seeds_json)),
        width=row.width,
        height=row.height,
        steps=row.steps,
        state=JobState(row.state),
        created_at=row.created_at,
        images=images,
        error_kind=row.error_kind,
        error=row.error,
        deleted_at=row.deleted_at,
    )
