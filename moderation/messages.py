"""Every user-facing string of admission and moderation, in one place.

They name a short reason category, never the matched terms or scores (those are for moderators), and carry
no internal names. `admission_message(decision)` is what an adapter shows for a refused or held prompt;
`review_outcome_message(item)` what it tells the requester when a moderator decided (or nobody did in time).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from config.settings import LimitSettings

if TYPE_CHECKING:  # for type hints only: moderation.review imports this module's callers
    from moderation.review import ReviewItem

USER_REASONS = {
    "sexual": "sexual content",
    "minors": "sexual content involving minors",
    "nudity": "nudity",
    "gore": "graphic gore",
    "violence": "violence",
    "hate": "hateful content",
    "drugs": "drug use",
    "self_harm": "self-harm",
    "real_person": "a real person in a sexual or violent scene",
    "trademark": "a trademarked character in an adult or violent scene",
    "unsure": "something our filter was unsure about",
}

HELD_FOR_REVIEW = (
    "Your prompt needs a quick look from a moderator (it may involve {reason}). "
    "You'll get your images here once it is approved."
)
BLOCKED = "I can't make that: prompts with {reason} aren't allowed here. Repeated attempts lead to a temporary ban."
BLOCKED_AND_BANNED = "I can't make that: prompts with {reason} aren't allowed here. {ban}"
BAN_UNTIL_LIFTED = "Your access to image generation is suspended until a moderator reviews it."
BAN_FOR = "Your access to image generation is suspended for {duration}."
BANNED_UNTIL_LIFTED = "Your access to image generation is suspended until a moderator lifts it."
BANNED_FOR = "Your access to image generation is suspended. Try again in {duration}."
RATE_LIMITED = {
    "burst": "You're sending prompts quickly. Try again in {duration}.",
    "user_window": "You've reached the limit of {count} prompts per {window}. Try again in {duration}.",
    "server_window": "This server has reached its limit of {count} prompts per {window}. Try again in {duration}.",
    "daily_quota": "You've used today's {count} prompts. Try again in {duration}.",
    "queue": "You already have {count} requests in progress. Send the next one when one of them finishes.",
}
APPROVED = "A moderator approved your prompt; your images are on their way. {prompt}"
REJECTED = "A moderator declined your prompt. {prompt}"
REJECTED_BECAUSE = "A moderator declined your prompt: {reason} {prompt}"
EXPIRED = "Nobody could review your prompt in time, so it was not generated. Please try another one. {prompt}"


def duration(seconds: float) -> str:
    """`192` -> '3 min 12 s'; `5400` -> '1 h 30 min'; never less than '1 s'."""
    seconds = max(1, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def reason_text(reason: str) -> str:
    return USER_REASONS.get(reason, USER_REASONS["unsure"])


def admission_message(outcome: str, reason: str = "", retry_after_s: float | None = None, *,
                      banned_now: bool = False, limits: LimitSettings | None = None) -> str:
    """The user-facing line for an admission outcome ("" when admitted: the queue status says enough).

    `reason` is the verdict's user reason (review, blocked) or the limit's name (rate_limited);
    `banned_now` says a blocked prompt also banned the user; `retry_after_s` None with a ban: until lifted.
    """
    if outcome == "review":
        return HELD_FOR_REVIEW.format(reason=reason_text(reason))
    if outcome == "banned":
        if retry_after_s is None:
            return BANNED_UNTIL_LIFTED
        return BANNED_FOR.format(duration=duration(retry_after_s))
    if outcome == "rate_limited":
        return _rate_limited(reason, retry_after_s, limits or LimitSettings())
    if outcome == "blocked":
        if not banned_now:
            return BLOCKED.format(reason=reason_text(reason))
        ban = BAN_UNTIL_LIFTED if retry_after_s is None else BAN_FOR.format(duration=duration(retry_after_s))
        return BLOCKED_AND_BANNED.format(reason=reason_text(reason), ban=ban)
    return ""


def _rate_limited(limit: str, retry_after_s: float | None, limits: LimitSettings) -> str:
    counts = {
        "user_window": limits.prompts_per_window,
        "server_window": limits.server_prompts_per_window,
        "daily_quota": limits.daily_quota,
        "queue": limits.max_queued_per_user,
    }
    template = RATE_LIMITED.get(limit, RATE_LIMITED["burst"])
    return template.format(duration=duration(retry_after_s or 1), count=counts.get(limit, 0),
                           window=duration(limits.window_s))


def review_outcome_message(item: ReviewItem) -> str:
    """What the requester hears once a held prompt is decided (or expired)."""
    from moderation.review import ReviewState

    prompt = _quote(item.request.prompt)
    if item.state is ReviewState.APPROVED:
        return APPROVED.format(prompt=prompt)
    if item.state is ReviewState.EXPIRED:
        return EXPIRED.format(prompt=prompt)
    if item.decision_reason:
        return REJECTED_BECAUSE.format(reason=item.decision_reason.rstrip(".") + ".", prompt=prompt)
    return REJECTED.format(prompt=prompt)


def _quote(prompt: str, limit: int = 80) -> str:
    shown = prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"
    return f"“{shown}”"
