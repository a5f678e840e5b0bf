"""A job as the engine's callers see it: its state, queue position, progress events and result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from engine import metrics
from engine.requests import GenerationRequest, JobResult, JobState, ProgressEvent
from engine.store import JobRecord


class Job:
    """Lives on the event loop. The pipeline thread only reads `stop_requested` and the deadline."""

    def __init__(self, record: JobRecord) -> None:
        self.record = record
        self.state = record.state
        self.position: int | None = None
        self.step = 0
        self.total_steps = record.steps
        self.enqueued_at = time.monotonic()
        self.started_at: float | None = None
        self.deadline: float | None = None
        self.cancel_requested = False
        self.handed_back = False
        self._listeners: set[asyncio.Queue[ProgressEvent]] = set()
        self._result: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        # A failed job whose result nobody awaits must not log "exception was never retrieved".
        self._result.add_done_callback(lambda future: future.cancelled() or future.exception())
        self._last_error: tuple[str | None, str | None] = (None, None)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def request(self) -> GenerationRequest:
        return self.record.request

    @property
    def user_key(self) -> str:
        return self.record.request.requester.key

    @property
    def image_count(self) -> int:
        return len(self.record.seeds)

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.record.seeds

    @property
    def stop_requested(self) -> bool:
        return self.cancel_requested or self.handed_back

    def past_deadline(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def snapshot(self) -> ProgressEvent:
        error_kind, error = self._last_error
        result = self._result.result() if self._result.done() and not self._result.exception() else None
        return ProgressEvent(
            job_id=self.id,
            state=self.state,
            position=self.position,
            step=self.step,
            total_steps=self.total_steps,
            error_kind=error_kind,
            error=error,
            images=result.images if result else (),
            timings=result.timings if result else None,
        )

    def publish(self) -> None:
        event = self.snapshot()
        for queue in self._listeners:
            queue.put_nowait(event)

    async def events(self) -> AsyncIterator[ProgressEvent]:
        """The current state at once, then every change, ending after a finished state (or when the job was
        handed back at shutdown: it stays journaled as queued and resumes on the next start)."""
        queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            event = self.snapshot()
            yield event
            while not event.state.finished and not self._result.done():
                event = await queue.get()
                yield event
        finally:
            self._listeners.discard(queue)

    async def result(self) -> JobResult:
        """The four images; raises JobCancelled, GenerationTimeout, GenerationFailed... as the job ended."""
        return await asyncio.shield(self._result)

    def finish(self, state: JobState, result: JobResult | None = None, error: Exception | None = None) -> None:
        if not self._result.done():  # its first ending (or a hand-back): counted and logged once
            self._report_end(state, result, error)
        self.state = state
        self.position = None
        if error is not None:
            self._last_error = (getattr(error, "kind", type(error).__name__), str(error))
            if not self._result.done():
                self._result.set_exception(error)
        elif result is not None and not self._result.done():
            self._result.set_result(result)
        self.publish()

    def _report_end(self, state: JobState, result: JobResult | None, error: Exception | None) -> None:
        now = time.monotonic()
        started = self.started_at
        metrics.job_ended(
            self.id,
            self.request.requester,
            state,
            queue_wait_s=(started or now) - self.enqueued_at,
            run_s=None if started is None else now - started,
            timings=result.timings if result is not None else None,
            error=error,
        )
