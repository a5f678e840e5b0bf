"""The job API between the chat side and the GPU side. Imports no torch, holds no shared objects.

A producer (the conversation, `imagine generate`, the web playground) submits a `GenerationRequest` and gets a
`JobHandle`: its id, its current `ProgressEvent` and an async stream of them (queued with position N → running
step k of n → done with image references, or failed with a kind, or cancelled). Everything an event carries is
plain data, and images are referenced by path, never held in memory, so the same API can sit in front of a worker
in another process. `engine/local.py` is the in-process implementation (one process, the pipeline in a thread).

    queue: JobQueue = ...
    handle = await queue.submit(GenerationRequest(prompt="a lighthouse at dawn"))
    async for event in handle.events(): ...   # ends after done / failed / cancelled (or a hand-back at shutdown)
    record = await queue.lookup(handle.id)     # the journaled job: request, seeds, image paths, state
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from engine.requests import GenerationRequest, JobState, ProgressEvent, Requester
from engine.store import JobRecord

__all__ = ["JobHandle", "JobQueue", "JobRecord", "JobState", "ProgressEvent"]


class JobHandle(Protocol):
    """A submitted job as its producer follows it."""

    @property
    def id(self) -> str: ...

    @property
    def request(self) -> GenerationRequest:
        """The request as validated and journaled (size, steps and seed fixed)."""

    @property
    def state(self) -> JobState: ...

    def snapshot(self) -> ProgressEvent:
        """Where the job stands now."""

    def events(self) -> AsyncIterator[ProgressEvent]:
        """The current state at once, then every change; ends after a finished state, or when the job was handed
        back at shutdown (it stays journaled as queued and resumes after the restart)."""


class JobQueue(Protocol):
    """What a producer needs: submit, follow, cancel, look up, and the delivery bookkeeping of results."""

    @property
    def accepting(self) -> bool:
        """False while starting or stopping: producers keep their requests stored for later."""

    async def submit(self, request: GenerationRequest) -> JobHandle:
        """Validate, journal, then queue: once this returns, the job survives a crash. Raises InvalidRequest,
        QueueFull or EngineClosed (engine/errors.py)."""

    async def cancel(self, job_id: str, by: Requester | None = None) -> bool:
        """Cancel a queued or running job; False if unknown or finished; NotAllowed if `by` is not its owner."""

    async def lookup(self, job_id: str) -> JobRecord | None: ...

    async def active(self, platform: str | None = None) -> Sequence[JobHandle]:
        """Queued and running jobs (e.g. to follow again after a restart)."""

    async def undelivered(self, platform: str | None = None) -> list[JobRecord]:
        """Finished jobs whose images nobody has confirmed delivering."""

    async def update_delivery(self, job_id: str, changes: dict[str, Any]) -> None:
        """Merge `changes` into the job's journaled delivery context (where its status message is)."""

    async def mark_delivered(self, job_id: str) -> None: ...

    async def readiness(self) -> dict[str, bool]:
        """Named checks that together say whether this queue can run work now (served at /readyz)."""
