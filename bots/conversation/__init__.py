"""The platform-neutral conversation: from a user's `/imagine` to four images posted back, and every button after.

Adapters translate platform events into `imagine()` and `press()` calls and implement `Replier`
(bots/contract.py) for the answers. The parts, in the order a request meets them:
- `submit.py`: validation, admission (limits, moderation, review) and refunds, submitting to the job queue;
- `follow.py` + `status.py`: the status message through queue position and progress (throttled edits);
- `delivery.py`: posting the images exactly once, with retries, and the sweep that delivers what is left;
- `presses.py`: buttons (`deleting.py`: Delete); `review.py`: the review desk in chat; `render.py`: what every
  message looks like;
- `styles.py`: style presets; `servers.py` + `settings_desk.py`: per-server settings by the server's admins
  (allowed channels, default style, strict moderation, tighter limits, moderators), applied to every command.
This class wires them together, owns their tasks (`tasks.py`) and resumes work after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from bots import messages
from bots.contract import ModeratorChannel, Replier, RepliersFor
from bots.conversation.deleting import Deleter
from bots.conversation.delivery import Deliveries
from bots.conversation.follow import Follower
from bots.conversation.image_prompts import ImageSource, InputImages
from bots.conversation.platforms import Platforms, reply_context
from bots.conversation.presses import ButtonPresses
from bots.conversation.render import image_buttons, images_message, single_image_message
from bots.conversation.review import POST_LEASE_S, ReviewDesk
from bots.conversation.servers import ServerSettings, ServerSettingsStore
from bots.conversation.settings_desk import SettingsDesk
from bots.conversation.styles import StyleBook
from bots.conversation.submit import ImagineCommand, Submitter
from bots.conversation.tasks import OwnedTasks, logged
from bots.errors import Deferred
from bots.intake import IntakeEntry
from config.settings import Settings
from engine.api import JobQueue
from engine.requests import GenerationRequest, Requester
from engine.screening import ImageScreener
from engine.store import JobStore
from moderation.admission import Admission
from moderation.audit import AuditLog
from storage.database import Database

__all__ = [
    "Conversation",
    "ImageSource",
    "ImagineCommand",
    "image_buttons",
    "images_message",
    "single_image_message",
]
log = logging.getLogger(__name__)


class Conversation:
    def __init__(
        self,
        settings: Settings,
        jobs: JobQueue,
        admission: Admission | None = None,
        *,
        database: Database,
        progress_interval_s: float = 1.5,
        delivery_retry_delays: Sequence[float] = (1.0, 3.0),
        review_poll_s: float = 2.0,
        review_post_lease_s: float = POST_LEASE_S,
        redelivery_interval_s: float = 60.0,
        input_screener: ImageScreener | None = None,
    ) -> None:
        """`input_screener`: the image screening that image prompts' pictures go through (the outputs' own)."""
        self.settings = settings
        self.jobs = jobs
        self.admission = admission
        self._platforms = Platforms()
        self._tasks = OwnedTasks()
        self.styles = StyleBook(settings.styles)
        self._servers = ServerSettingsStore(database)
        audit = AuditLog(database)
        default_strength = settings.image_prompts.default_strength
        self.settings_desk = SettingsDesk(self._servers, self.styles, settings.limits, audit, default_strength)
        self._desk = ReviewDesk(jobs, admission, self._platforms, review_poll_s, self._servers, review_post_lease_s)
        self._deliveries = Deliveries(
            jobs,
            database,
            self._platforms,
            self._tasks,
            self._desk.flag_withheld_images,
            retry_delays=delivery_retry_delays,
            redelivery_interval_s=redelivery_interval_s,
            give_up_after_s=settings.service.delivery_give_up_s,
        )
        self._follower = Follower(jobs, admission, self._deliveries, progress_interval_s)
        self._submitter = Submitter(
            settings,
            jobs,
            admission,
            self._follower,
            self._tasks,
            self._desk.post_for_review,
            InputImages(settings, input_screener),
            self._servers,
        )
        self._desk.attach(self._submitter)
        deleter = Deleter(jobs, JobStore(database), audit)
        self._presses = ButtonPresses(jobs, self._submitter, self._desk, deleter)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def add_platform(self, platform: str, replier_for: RepliersFor, moderators: ModeratorChannel | None = None) -> None:
        self._platforms.add(platform, replier_for, moderators)

    async def start(self) -> None:
        """Follow jobs the queue resumed from its journal, deliver results that were never delivered, then keep
        sweeping for undelivered results and polling for review decisions."""
        already_followed = self._submitter.followed_before_start or set()
        self._submitter.followed_before_start = None
        for platform, entry in self._platforms.items():
            for job in await self.jobs.active(platform):
                if job.id in already_followed:
                    continue
                if self.admission is not None:
                    await self.admission.job_started(job.request.requester)
                replier = entry.replier(reply_context(job.request))
                self._tasks.spawn(self._follower.follow(job, replier), f"follow-{job.id}")
        await self.redeliver_undelivered()
        self._tasks.spawn_poller(self._deliveries.sweep_periodically(), "redelivery-sweep")
        if self.admission is not None:
            self._tasks.spawn_poller(self._desk.poll_decisions(), "review-poller")

    @property
    def review_polls(self) -> int:
        """Rounds of the review poller completed: decisions acted on, posts taken over and retried."""
        return self._desk.polls

    async def settled(self) -> None:
        """Wait until every follower and delivery started so far has ended (for tests and orderly stops)."""
        await self._tasks.settled()

    async def close(self, drain_timeout_s: float = 0.0) -> None:
        """Stop polling; give followers up to `drain_timeout_s` to deliver what the queue finished; cancel
        the rest (their jobs stay journaled and are picked up again on the next start); hand back the review
        posts not made yet."""
        await self._tasks.close(drain_timeout_s)
        await logged(self._desk.release_posts(), "handing back review posts")

    # ---- what adapters call ----------------------------------------------------------------------------------

    async def imagine(self, command: ImagineCommand, replier: Replier) -> str | None:
        """Apply the server's settings (allowed channels, default style) and the style, then admit and queue the
        prompt (an image prompt's picture checked first); returns the job id, or None when it was refused or held
        for review."""
        requester = command.requester
        server = await self._servers.get(requester.platform, requester.server_id)
        if not server.allows_channel(requester.channel_id):
            await replier.refuse(messages.channel_not_allowed(server.allowed_channels))
            return None
        request = self._styled(command, server)
        if request is None:
            await replier.refuse(messages.unknown_style(command.style, self.styles.names))
            return None
        return await self._submitter.admit_and_submit(request, replier, image=command.image)

    def _styled(self, command: ImagineCommand, server: ServerSettings) -> GenerationRequest | None:
        """The request in the style asked for, else in the server's default style; None for an unknown style.
        A default style since removed from the configuration is passed over (the admin's choice went stale, the
        user asked for nothing wrong). An image prompt's strength: the command's, else the server's default."""
        strength = server.default_strength
        request = command.to_request(self.settings.image_prompts.default_strength if strength is None else strength)
        if command.style.strip():
            name = self.styles.find(command.style)
            return None if name is None else self.styles.apply(name, request)
        if server.default_style:
            name = self.styles.find(server.default_style)
            if name is None:
                log.warning("the default style %r of a server is not configured any more", server.default_style)
                return request
            return self.styles.apply(name, request)
        return request

    async def server_settings(self, platform: str, server_id: str) -> ServerSettings:
        """A server's settings as its admins left them (read afresh: a change holds from the next command)."""
        return await self._servers.get(platform, server_id)

    def styles_text(self) -> str:
        """The reply to `/imagine-styles`."""
        return messages.styles_list([self.styles.label(name) for name in self.styles.names])

    async def press(
        self,
        custom_id: str,
        user: Requester,
        replier: Replier,
        *,
        is_moderator: bool = False,
        place: dict[str, Any] | None = None,
        intake_key: str = "",
    ) -> str | None:
        """Act on a button: U/V/reroll/cancel on a job, approve/reject on a review item. Returns the id of the
        job it started (variations, reroll), if any."""
        return await self._presses.press(
            custom_id, user, replier, is_moderator=is_moderator, place=place, intake_key=intake_key
        )

    async def open_stored(self, platform: str, entry: IntakeEntry) -> bool:
        """Whether a request handed over by an adapter's intake should be handled now. Raises Deferred while the
        queue takes no work (it stays stored for the next start); False for a replay that already became a job."""
        if not self.jobs.accepting:
            raise Deferred("the job queue is not taking work: keep the request for the next start")
        return not (entry.replayed and await self._became_job(platform, entry.key))

    async def redeliver_undelivered(self) -> None:
        await self._deliveries.redeliver_undelivered()

    async def process_review_decisions(self) -> None:
        await self._desk.process_decisions()

    async def _became_job(self, platform: str, key: str) -> bool:
        """Did the request stored under `key` already get as far as a job (one still followed, or not yet
        delivered)? Such a job carries the key in its reply context."""
        requests = [job.request for job in await self.jobs.active(platform)]
        requests += [record.request for record in await self.jobs.undelivered(platform)]
        return any(reply_context(request).intake_key == key for request in requests)
