"""Moderation's exceptions: one root, `ModerationError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moderation.review import ReviewItem


class ModerationError(Exception):
    """Base class of everything moderation/ raises on purpose."""


class ReviewError(ModerationError):
    """A moderator action on the review queue that cannot be carried out; the message says why."""


class ReviewItemNotFound(ReviewError, LookupError):
    pass


class AlreadyDecided(ReviewError):
    def __init__(self, item: ReviewItem) -> None:
        super().__init__(f"review item {item.id} was already {item.state.value} by {item.decided_by}")
        self.item = item


class ReviewExpired(ReviewError):
    def __init__(self, item: ReviewItem) -> None:
        super().__init__(f"review item {item.id} expired before anyone decided; the requester has been told")
        self.item = item
