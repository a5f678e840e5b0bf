"""Admission: what every request passes before any GPU time is spent. The conversation layer's one entry point.

    admission = await Admission.open(settings)            # opens the moderation tables, loads the models
    decision = await admission.check(request, is_moderator=False)
    if decision.admitted:
        try:
            job = await engine.submit(request)
        except QueueFull:
            await admission.submission_failed(request.requester)     # refunds the rate limit and the slot
            raise
        ...                                                          # when the job ends, whatever the outcome:
        await admission.job_finished(request.requester)
    else:
        reply(decision.message)           # user-facing, never names matched terms; retry_after_s for buttons
    ...
    for item in await admission.review.claim_decided():    # poll in the serving process (see review.py)
        if item.state is ReviewState.APPROVED:
            await admission.job_started(item.requester)    # approved work bypasses check(): count its slot
            job = await engine.submit(item.request)
        else:
            reply(review_outcome_message(item))
    await admission.close()

Order: ban check -> rate limits -> prompt moderation -> (block: strike, maybe ban; review: enqueue item).
A server's admins may make their server stricter (`ServerRules`, from bots/conversation/servers.py): tighter
limits, counted by a limiter of the server's own on top of the global one (a prompt passes only if both allow
it), and strict moderation, which holds for review every prompt that is not clearly benign (`strictly`).
Refused requests never reach the engine. Budget: the rate limits count every prompt that gets past them,
including prompts that moderation then blocks or holds (probing the filter costs budget, and moderation
itself costs CPU); only an admitted prompt keeps its queue slot. Moderators (as the adapter judges them,
`is_moderator=True`) and `moderation.admin_user_ids` (e.g. "discord:123") skip the rate limits, not
moderation. With `moderation.enabled = false` prompts are not moderated (limits and bans still apply).
If prompt moderation itself fails, the prompt is held for review (fail closed) and the error is logged.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from config.settings import LimitSettings, Settings
from engine.requests import GenerationRequest, Requester
from moderation import metrics
from moderation.audit import AuditLog
from moderation.limits import InMemoryRateLimiter, LimitDecision, RateLimiter, close_limiter
from moderation.messages import admission_message
from moderation.policy import SEMANTIC_PREFIX
from moderation.prompts import PromptModerator
from moderation.review import ReviewQueue
from moderation.strikes import Ban, StrikeBook
from moderation.verdict import Action, Verdict
from storage.database import Database

if TYPE_CHECKING:
    from moderation.limits_redis import RedisRateLimiter

logger = logging.getLogger(__name__)


def _server_key(requester: Requester) -> str | None:
    return f"{requester.platform}:{requester.server_id}" if requester.server_id else None


class Outcome(enum.StrEnum):
    ADMITTED = "admitted"
    REVIEW = "review"
    BLOCKED = "blocked"
    RATE_LIMITED = "rate_limited"
    BANNED = "banned"


@dataclass(frozen=True)
class AdmissionDecision:
    outcome: Outcome
    message: str = ""
    """What to tell the requester ("" when admitted)."""
    reason: str = ""
    """User-safe category: the verdict's user reason (review, blocked) or the limit that refused
    (burst, user_window, server_window, daily_quota, queue)."""
    retry_after_s: float | None = None
    """Rate limited: seconds until a retry can pass (None for the queue cap). Banned, or blocked with a ban:
    seconds until the ban ends (None: until a moderator lifts it)."""
    review_item_id: str | None = None
    verdict: Verdict | None = None
    """For moderators and logs only: reasons may quote matched terms."""
    ban: Ban | None = None

    @property
    def admitted(self) -> bool:
        return self.outcome is Outcome.ADMITTED


@dataclass(frozen=True)
class ServerRules:
    """What a server's admins made stricter for their server (never looser than the global settings)."""

    strict: bool = False
    """Hold for review every prompt that is not clearly benign (see `strictly`)."""
    limits: LimitSettings | None = None
    """The server's own limits (each at most the global one); None: the global limits alone."""


NOT_A_CONCERN = frozenset({"person"})
"""Cue categories that say nothing about safety on their own ("a woman", "a man"): strict mode ignores them."""
STRICT_REASON = "strict moderation: not clearly benign"


class Admission:
    def __init__(
        self,
        settings: Settings,
        *,
        moderator: PromptModerator,
        limiter: RateLimiter,
        database: Database,
        clock: Callable[[], float] = time.time,
        owns_database: bool = False,
    ) -> None:
        self.settings = settings
        self.moderator = moderator
        self.limiter = limiter
        self.database = database
        self.clock = clock
        self._owns_database = owns_database
        self.audit = AuditLog(database, clock=clock)
        self.strikes = StrikeBook(database, settings.moderation, clock=clock)
        self.review = ReviewQueue(database, expiry_s=settings.moderation.review_expiry_s, clock=clock)
        self._admins = frozenset(settings.moderation.admin_user_ids)
        self._owned_limiter: RedisRateLimiter | None = None
        self._server_limiters: dict[str, tuple[LimitSettings, RateLimiter]] = {}
        """Per server with limits of its own: those limits and the limiter that counts them."""

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        database: Database | None = None,
        moderator: PromptModerator | None = None,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.time,
        warm_up: bool = True,
    ) -> Admission:
        """Build from settings; `warm_up` loads the embedding model now (seconds, off the event loop). Without
        `database` (the service passes its shared one) it opens one of its own, closed by `close()`."""
        owns_database = database is None
        database = database or await Database.open(settings.store.url)
        try:
            moderator = moderator or PromptModerator.from_settings(settings.moderation, settings.engine.cache_dir)
            if warm_up and settings.moderation.enabled:
                await moderator.warm_up()
        except BaseException:
            if owns_database:
                await database.close()
            raise
        owned_limiter = None
        if limiter is None and settings.engine.queue == "redis":  # scale-out: one count for every frontend
            from moderation.limits_redis import RedisRateLimiter

            engine = settings.engine
            limiter = owned_limiter = RedisRateLimiter.from_url(settings.limits, engine.redis_url, engine.redis_prefix)
        limiter = limiter or InMemoryRateLimiter(settings.limits, clock)
        admission = cls(
            settings, moderator=moderator, limiter=limiter, database=database, clock=clock, owns_database=owns_database
        )
        admission._owned_limiter = owned_limiter
        return admission

    async def close(self) -> None:
        self.moderator.close()
        if self._owned_limiter is not None:
            await self._owned_limiter.close()
        for _, limiter in self._server_limiters.values():
            await close_limiter(limiter)
        self._server_limiters.clear()
        if self._owns_database:
            await self.database.close()

    def is_exempt(self, requester: Requester, is_moderator: bool = False) -> bool:
        return is_moderator or requester.key in self._admins

    async def check(
        self, request: GenerationRequest, *, is_moderator: bool = False, rules: ServerRules | None = None
    ) -> AdmissionDecision:
        requester = request.requester
        rules = rules or ServerRules()
        ban = await self.strikes.active_ban(requester.key)
        if ban is not None:
            return self._log(requester, self._banned(ban, self.moderator.language(request.prompt)))
        refused = await self._acquire(requester, is_moderator, rules)
        if refused is not None:
            return self._log(requester, refused)
        verdict = await self._moderate(request.prompt)
        if rules.strict:
            verdict = self.strictly(verdict)
        if verdict.action is Action.ALLOW:
            return self._log(requester, AdmissionDecision(Outcome.ADMITTED, verdict=verdict))
        await self.job_finished(requester)  # no job: give the queue slot back
        if verdict.action is Action.REVIEW:
            return self._log(requester, await self._hold(request, verdict))
        return self._log(requester, await self._block(requester, request.prompt, verdict))

    def strictly(self, verdict: Verdict) -> Verdict:
        """A server's strict moderation: an allowed prompt that is not clearly benign is held for review. Not
        clearly benign: a cue category was hit (swimwear, violence, a minor's age...: harmless alone, which is
        why the normal policy lets them pass), or its meaning came within a cue threshold of a category."""
        if verdict.action is not Action.ALLOW:
            return verdict
        cues = [c for c in verdict.categories if c not in NOT_A_CONCERN]
        close = [
            SEMANTIC_PREFIX + category.name
            for category in self.moderator.policy.semantic
            if verdict.scores.get(category.name, 0.0) >= category.cue_threshold
        ]
        if not cues and not close:
            return verdict
        reasons = (f"{STRICT_REASON} ({', '.join(cues + close)})",)
        return replace(verdict, action=Action.REVIEW, reasons=reasons, user_reason="unsure")

    async def job_started(self, requester: Requester) -> None:
        """A job that did not come through `check` (approved review item, resumed after restart) is running."""
        await self.limiter.job_started(requester.key)
        server = self._server_limiter(requester)
        if server is not None:
            await server.job_started(requester.key)

    async def job_finished(self, requester: Requester) -> None:
        """An admitted job ended (done, failed or cancelled): free its queue slot."""
        await self.limiter.job_finished(requester.key)
        server = self._server_limiter(requester)
        if server is not None:
            await server.job_finished(requester.key)

    async def submission_failed(self, requester: Requester) -> None:
        """The engine refused an admitted request (queue full, closed): undo its counts."""
        server_key = _server_key(requester)
        await self.limiter.refund(requester.key, server_key)
        server = self._server_limiter(requester)
        if server is not None:
            await server.refund(requester.key, server_key)

    async def _acquire(self, requester: Requester, is_moderator: bool, rules: ServerRules) -> AdmissionDecision | None:
        """Count the prompt by the global limits and, where the server has its own, by those too (all or
        nothing); the refusal, or None when admitted."""
        server_key = _server_key(requester)
        exempt = self.is_exempt(requester, is_moderator)
        limit = await self.limiter.acquire(requester.key, server_key, exempt=exempt)
        if not limit.allowed:
            return self._rate_limited(limit, self.settings.limits)
        if rules.limits is None or server_key is None:
            return None
        server = await self._limiter_for(server_key, rules.limits)
        own = await server.acquire(requester.key, server_key, exempt=exempt)
        if own.allowed:
            return None
        await self.limiter.refund(requester.key, server_key)
        return self._rate_limited(own, rules.limits)

    @staticmethod
    def _rate_limited(limit: LimitDecision, limits: LimitSettings) -> AdmissionDecision:
        reason = limit.limit or "burst"
        message = admission_message(Outcome.RATE_LIMITED, reason, limit.retry_after_s, limits=limits)
        return AdmissionDecision(Outcome.RATE_LIMITED, message, reason, limit.retry_after_s)

    def _server_limiter(self, requester: Requester) -> RateLimiter | None:
        """The limiter of the requester's server, if it has limits of its own."""
        server_key = _server_key(requester)
        known = self._server_limiters.get(server_key) if server_key else None
        return known[1] if known is not None else None

    async def _limiter_for(self, server_key: str, limits: LimitSettings) -> RateLimiter:
        """The server's limiter for `limits`, made (or remade, when its admins changed them) as needed. Counts
        start afresh when the limits change."""
        known = self._server_limiters.get(server_key)
        if known is not None and known[0] == limits:
            return known[1]
        if self.settings.engine.queue == "redis":  # one count for every frontend, under keys of the server's own
            from moderation.limits_redis import RedisRateLimiter

            engine = self.settings.engine
            prefix = f"{engine.redis_prefix}:server-limits:{server_key}"
            limiter: RateLimiter = RedisRateLimiter.from_url(limits, engine.redis_url, prefix)
        else:
            limiter = InMemoryRateLimiter(limits, self.clock)
        self._server_limiters[server_key] = (limits, limiter)
        if known is not None:
            await close_limiter(known[1])
        return limiter

    async def _moderate(self, prompt: str) -> Verdict:
        if not self.settings.moderation.enabled:
            return Verdict(Action.ALLOW)
        try:
            return await self.moderator.check(prompt)
        except Exception:  # fail closed: a human looks at what the filter could not judge
            logger.exception("prompt moderation failed; holding the prompt for review")
            return Verdict(Action.REVIEW, ("moderation_error",), ("prompt moderation failed",), "unsure")

    async def _hold(self, request: GenerationRequest, verdict: Verdict) -> AdmissionDecision:
        item = await self.review.submit(request, verdict)
        message = admission_message(Outcome.REVIEW, verdict.user_reason, language=verdict.language)
        return AdmissionDecision(Outcome.REVIEW, message, verdict.user_reason, review_item_id=item.id, verdict=verdict)

    async def _block(self, requester: Requester, prompt: str, verdict: Verdict) -> AdmissionDecision:
        evidence = f"{'; '.join(verdict.reasons)} | prompt: {prompt[:500]!r}"
        outcome = await self.strikes.add_strike(requester.key, verdict.user_reason, evidence, ban_now=verdict.ban)
        ban = outcome.ban
        retry = ban.remaining_s(self.clock()) if ban is not None else None
        message = admission_message(
            Outcome.BLOCKED, verdict.user_reason, retry, banned_now=ban is not None, language=verdict.language
        )
        return AdmissionDecision(Outcome.BLOCKED, message, verdict.user_reason, retry, verdict=verdict, ban=ban)

    def _banned(self, ban: Ban, language: str) -> AdmissionDecision:
        retry = ban.remaining_s(self.clock())
        message = admission_message(Outcome.BANNED, "", retry, language=language)
        return AdmissionDecision(Outcome.BANNED, message, "banned", retry, ban=ban)

    @staticmethod
    def _log(requester: Requester, decision: AdmissionDecision) -> AdmissionDecision:
        if decision.verdict is not None:
            action = decision.verdict.action.value
            metrics.MODERATION.labels(action, decision.verdict.user_reason or "none").inc()
        elif decision.outcome is Outcome.RATE_LIMITED:
            metrics.RATE_LIMITED.labels(decision.reason).inc()
        elif decision.outcome is Outcome.BANNED:
            metrics.BANNED.inc()
        logger.info(
            "admission for %s: %s%s",
            requester.key,
            decision.outcome.value,
            f" ({decision.reason})" if decision.reason else "",
        )
        return decision
