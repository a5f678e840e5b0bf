"""What the conversation layer asks an adapter to show. Adapters implement `Replier` (one per conversation with a
user) and `ModeratorChannel`; they only translate these calls into platform requests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bots.buttons import Button


@dataclass(frozen=True)
class Attachment:
    filename: str
    path: str
    """A JPEG on disk (read it in an executor, not on the event loop)."""
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Delivery:
    """The images message: text, the JPEG files, and rows of buttons (each row at most 5 buttons)."""

    job_id: str
    text: str
    attachments: tuple[Attachment, ...]
    button_rows: tuple[tuple[Button, ...], ...] = ()


class PlaceUnreachable(Exception):
    """Raised by a replier when the platform says the bot cannot post where the request came from at all (not a
    member of the channel), as opposed to a transient failure. The conversation then drops the job at once."""


class Replier(Protocol):
    """Talks to one requester in one place (a channel, a thread, a DM). Rebuilt after a restart from the
    journaled `delivery` context by the adapter's `replier_for(context)`."""

    async def show_status(self, text: str, buttons: Sequence[Button] = ()) -> None:
        """Create the status message, or edit it if it exists (the conversation layer throttles calls)."""

    async def refuse(self, text: str) -> None:
        """Tell only the requester (ephemeral where the platform allows)."""

    async def deliver(self, delivery: Delivery) -> None:
        """Post the images message. Raise on failure: the conversation layer retries and records delivery only
        after this returns, so an adapter must not post twice for one successful call."""

    async def notify(self, text: str) -> None:
        """A plain message to the requester (e.g. a moderator's decision)."""

    # Optional: a Replier may also expose `context: dict[str, Any]`, its current delivery context. After a status
    # update the conversation journals it with the job when it changed (e.g. now naming the status message
    # posted), so that after a restart `replier_for(context)` edits that message rather than posting another.


@dataclass(frozen=True)
class ReviewPost:
    item_id: str
    text: str
    buttons: tuple[Button, ...]
    image_paths: tuple[str, ...] = ()
    """For image-screening hits: the withheld (blurred) images to show moderators."""
    meta: dict[str, Any] = field(default_factory=dict)


class ModeratorChannel(Protocol):
    async def post_review(self, post: ReviewPost) -> None: ...

    async def close_review(self, item_id: str, text: str) -> None:
        """Update the posted review message: decided, by whom, buttons removed."""
