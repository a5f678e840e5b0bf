"""Buttons: U (that image alone), V (variations), reroll, cancel, delete (bots/conversation/deleting.py);
approve/reject go to the review desk."""

from __future__ import annotations

from typing import Any

from bots import messages
from bots.buttons import Action, Button, parse_button
from bots.contract import Replier, ReplyContext
from bots.conversation.deleting import Deleter
from bots.conversation.platforms import reply_context
from bots.conversation.render import single_image_message
from bots.conversation.review import ReviewDesk
from bots.conversation.submit import Submitter
from bots.errors import BadButton
from engine.api import JobQueue
from engine.errors import NotAllowed
from engine.requests import GenerationRequest, Requester, Variation

VARIATION_STRENGTH = 0.25


class ButtonPresses:
    def __init__(self, jobs: JobQueue, submitter: Submitter, desk: ReviewDesk, deleter: Deleter) -> None:
        self._jobs = jobs
        self._submitter = submitter
        self._desk = desk
        self._deleter = deleter

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
        """Act on a button. New work it starts (variations, reroll) is answered at `place` (where the click
        happened), or where the original job was asked; its job id is returned (None when the button started
        none, or its new work was refused or held for review)."""
        try:
            button = parse_button(custom_id)
        except BadButton:
            await replier.refuse(messages.UNKNOWN_BUTTON)
            return None
        if button.action in (Action.APPROVE, Action.REJECT):
            await self._desk.decide(button, user, replier, is_moderator)
        elif button.action is Action.CANCEL:
            await self._cancel(button.target, user, replier)
        elif button.action is Action.DELETE:
            await self._deleter.delete(button.target, user, replier, is_moderator)
        else:
            return await self._job_button(button, user, replier, place, intake_key)
        return None

    async def _cancel(self, job_id: str, user: Requester, replier: Replier) -> None:
        try:
            cancelled = await self._jobs.cancel(job_id, by=user)
        except NotAllowed:
            await replier.refuse(messages.NOT_YOURS_TO_CANCEL)
            return
        if not cancelled:
            await replier.refuse(messages.ALREADY_FINISHED)

    async def _job_button(
        self, button: Button, user: Requester, replier: Replier, place: dict[str, Any] | None, intake_key: str
    ) -> str | None:
        record = await self._jobs.lookup(button.target)
        if record is None or record.deleted or not record.images and button.action is not Action.REROLL:
            await replier.refuse(messages.UNKNOWN_JOB)
            return None
        index = button.index or 0
        if button.action in (Action.UPSCALE, Action.VARIATION) and not 0 <= index < len(record.images):
            await replier.refuse(messages.UNKNOWN_BUTTON)
            return None
        if button.action is Action.UPSCALE:
            await replier.deliver(single_image_message(record, index))
            return None
        original = record.request
        variation = None
        if button.action is Action.VARIATION:
            variation = Variation(record.images[index].seed, VARIATION_STRENGTH)
        answer_at = reply_context(original).place if place is None else place
        request = GenerationRequest(
            prompt=original.prompt,
            requester=user,
            negative_prompt=original.negative_prompt,
            aspect=original.aspect,
            size=original.size,
            steps=original.steps,
            variation=variation,
            image_prompt=original.image_prompt,  # an image prompt's picture was checked and stored: start from it again
            guidance_scale=original.guidance_scale,
            style=original.style,
            delivery=ReplyContext(dict(answer_at), intake_key).to_dict(),
        )
        return await self._submitter.admit_and_submit(request, replier)
