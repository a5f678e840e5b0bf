"""The Delete button: a job's requester, or a moderator, takes its images down: the message in chat, the JPEGs on
disk, and the job marked deleted in the store (its other buttons then answer that the images are gone).

Everything needed comes from the button (the job id) and the database, so it works after a restart. The job is
marked first, then its files and the message go: a crash in between leaves a job that a second press finishes
(pressing Delete on a deleted job does the removal again). Every delete, and every refused press, is audited."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bots import messages
from bots.contract import RemovesPressedMessage, Replier
from engine.api import JobQueue, JobRecord
from engine.requests import Requester
from engine.store import JobStore
from moderation.audit import AuditLog

log = logging.getLogger(__name__)


class Deleter:
    def __init__(self, jobs: JobQueue, store: JobStore, audit: AuditLog) -> None:
        self._jobs = jobs
        self._store = store
        self._audit = audit

    async def delete(self, job_id: str, user: Requester, replier: Replier, is_moderator: bool) -> None:
        record = await self._jobs.lookup(job_id)
        if record is None or not record.request.requester.platform == user.platform:
            await replier.refuse(messages.UNKNOWN_JOB)
            return
        target = f"job:{job_id}"
        owner = record.request.requester.user_id == user.user_id
        if not owner and not is_moderator:
            log.warning("%s pressed Delete on job %s, which is not theirs; refused", user.key, job_id)
            await self._audit.record_refused(user.key, "delete", target, "not the requester or a moderator")
            await replier.refuse(messages.NOT_YOURS_TO_DELETE)
            return
        if not isinstance(replier, RemovesPressedMessage):
            await replier.refuse(messages.UNKNOWN_BUTTON)
            return
        newly = await self._store.mark_deleted(job_id, user.key)
        removed = await asyncio.to_thread(_remove_files, record)
        await replier.remove_pressed_message()
        how = "by its requester" if owner else "by a moderator"
        await self._audit.record(
            user.key, "delete", target, f"{how}; {removed} file(s) removed" + ("" if newly else "; again")
        )
        log.info("job %s deleted by %s (%d file(s) removed)", job_id, user.key, removed)
        await replier.refuse(messages.DELETED)


def _remove_files(record: JobRecord) -> int:
    """The job's JPEGs (delivered and, for withheld images, the originals kept for moderators); how many went."""
    removed = 0
    for image in record.images:
        for path in (image.path, image.original_path):
            if not path:
                continue
            try:
                Path(path).unlink()
            except FileNotFoundError:
                continue
            removed += 1
    return removed
