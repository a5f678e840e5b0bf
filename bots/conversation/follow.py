"""Following a job: its status message through queue and progress, then delivery when it is done."""

from __future__ import annotations

from bots import messages
from bots.contract import Replier
from bots.conversation.delivery import Deliveries, Outcome
from bots.conversation.platforms import journal_place
from bots.conversation.render import cancel_buttons
from bots.conversation.status import ThrottledStatus
from engine.api import JobHandle, JobQueue, JobRecord
from engine.requests import JobState
from moderation.admission import Admission


class Follower:
    def __init__(
        self, jobs: JobQueue, admission: Admission | None, deliveries: Deliveries, progress_interval_s: float
    ) -> None:
        self._jobs = jobs
        self._admission = admission
        self._deliveries = deliveries
        self.progress_interval_s = progress_interval_s

    def status_for(self, replier: Replier, prompt: str) -> ThrottledStatus:
        return ThrottledStatus(replier, prompt, self.progress_interval_s)

    async def follow(self, job: JobHandle, replier: Replier, status: ThrottledStatus | None = None) -> None:
        """Until delivered (or handed back at shutdown), our sweep leaving its delivery to it."""
        self._deliveries.hold(job.id)
        try:
            await self._follow_until_delivered(job, replier, status or self.status_for(replier, job.request.prompt))
        finally:
            self._deliveries.release(job.id)

    async def _follow_until_delivered(self, job: JobHandle, replier: Replier, status: ThrottledStatus) -> None:
        cancel = cancel_buttons(job.id)
        async for event in job.events():
            if not event.state.finished:
                await status.show(event, cancel)
                await journal_place(self._jobs, job.id, replier)
        if not job.state.finished:
            return  # handed back at shutdown: it resumes, and is followed again, after the restart
        if self._admission is not None:
            await self._admission.job_finished(job.request.requester)
        if job.state is JobState.DONE:
            outcome = await self._deliveries.deliver(await self._record(job.id), replier)
            if outcome is Outcome.TAKEN:
                return  # its deliverer closes the status too
            if outcome is Outcome.FAILED:
                await status.show_text(messages.status_delivery_delayed(job.request.prompt), (), final=True)
                return
        await status.show(job.snapshot(), (), final=True)

    async def _record(self, job_id: str) -> JobRecord:
        record = await self._jobs.lookup(job_id)
        if record is None:
            raise LookupError(f"job {job_id} is not in the job store")
        return record
