"""A requester's status message (queued, position, progress), edited at most once per interval."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

from bots import messages
from bots.buttons import Button
from bots.contract import Replier
from bots.conversation.tasks import logged
from bots.errors import PlaceUnreachable
from engine.requests import ProgressEvent

log = logging.getLogger(__name__)


class ThrottledStatus:
    """Edits the status message at most once per interval, and only when the text changes."""

    def __init__(self, replier: Replier, prompt: str, interval_s: float) -> None:
        self.replier = replier
        self.prompt = prompt
        self.interval_s = interval_s
        self.shown: str | None = None
        self.shown_at = -math.inf

    async def show(self, event: ProgressEvent, buttons: Sequence[Button], final: bool = False) -> None:
        await self.show_text(messages.status(event, self.prompt), buttons, final)

    async def show_first(self, event: ProgressEvent, buttons: Sequence[Button]) -> None:
        """The first status: like `show`, except that `PlaceUnreachable` reaches the caller (any other failure
        is transient: the follower's next update tries again)."""
        text = messages.status(event, self.prompt)
        try:
            await self.replier.show_status(text, buttons)
        except PlaceUnreachable:
            raise
        except Exception:
            log.exception("posting the first status message failed")
            return
        self.shown, self.shown_at = text, time.monotonic()

    async def show_text(self, text: str, buttons: Sequence[Button], final: bool = False) -> None:
        if text == self.shown:
            return
        wait = self.shown_at + self.interval_s - time.monotonic()
        if wait > 0:
            if not final:
                return
            await asyncio.sleep(wait)
        await logged(self.replier.show_status(text, buttons), "updating a status message")
        self.shown, self.shown_at = text, time.monotonic()
