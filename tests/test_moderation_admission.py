"""The Admission facade: ban check -> rate limits -> prompt moderation -> strike/ban or review item."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.requests import GenerationRequest, Requester
from moderation.admission import Admission, Outcome
from moderation.limits import InMemoryRateLimiter
from moderation.messages import review_outcome_message
from moderation.prompts import PromptModerator
from moderation.review import ReviewState
from moderation.semantic import SemanticScorer
from storage.database import Database
from tests.moderation_support import ManualClock, make_settings, moderator, reuse_loaded_model, shared_policy

BOB = Requester(platform="discord", user_id="222", server_id="g1", channel_id="c1")


def ask(prompt: str, requester: Requester = BOB) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, requester=requester, delivery={"channel_id": "c1", "token": "t"})


async def build(
    tmp_path: Path, clock: ManualClock, *, prompts: PromptModerator | None = None, **sections: Any
) -> Admission:
    settings = make_settings(tmp_path, **sections)
    database = await Database.open(settings.store.url)
    return Admission(
        settings,
        moderator=prompts or moderator(),
        database=database,
        clock=clock,
        limiter=InMemoryRateLimiter(settings.limits, clock),
        owns_database=True,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def admission(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Admission]:
    admission = await build(tmp_path, clock)
    yield admission
    await admission.close()


async def test_clean_prompt_is_admitted_and_holds_a_queue_slot(admission: Admission) -> None:
    decision = await admission.check(ask("a lighthouse at dawn, oil painting"))
    assert decision.admitted and decision.message == "" and decision.retry_after_s is None
    assert await admission.limiter.active_jobs(BOB.key) == 1
    await admission.job_finished(BOB)
    assert await admission.limiter.active_jobs(BOB.key) == 0


async def test_flagged_prompt_waits_in_the_review_queue(admission: Admission) -> None:
    request = ask("a woman wearing nothing at all, every detail visible")
    decision = await admission.check(request)
    assert decision.outcome is Outcome.REVIEW and decision.reason == "nudity"
    assert "moderator" in decision.message and "nothing at all" not in decision.message
    assert await admission.limiter.active_jobs(BOB.key) == 0  # no job yet: the slot was given back
    item = await admission.review.get(decision.review_item_id or "")
    assert item.request == request and item.state is ReviewState.PENDING
    await admission.review.approve(item.id, "discord:999")
    claimed = await admission.review.claim_decided()
    assert [(c.id, c.request) for c in claimed] == [(item.id, request)]
    assert "approved" in review_outcome_message(claimed[0])


async def test_blocked_prompt_gives_a_strike_and_three_strikes_ban(admission: Admission, clock: ManualClock) -> None:
    for _ in range(3):
        decision = await admission.check(ask("p0rn of a busty woman"))
        assert decision.outcome is Outcome.BLOCKED and decision.reason == "sexual"
        assert "porn" not in decision.message.lower() and "sexual content" in decision.message
        clock.advance(300)  # let the rate limit refill
    assert decision.ban is not None and "suspended for" in decision.message
    assert await admission.strikes.strike_count(BOB.key) == 3
    refused = await admission.check(ask("a lighthouse"))
    assert refused.outcome is Outcome.BANNED
    assert refused.retry_after_s == pytest.approx(86400.0 - 300.0)
    assert "Try again in 23 h 55 min" in refused.message


async def test_minors_block_bans_at_once_pending_review(admission: Admission) -> None:
    decision = await admission.check(ask("n.u.d.e 10 y/o"))
    assert decision.outcome is Outcome.BLOCKED and decision.reason == "minors"
    assert decision.ban is not None and decision.ban.pending_review and decision.retry_after_s is None
    assert "until a moderator reviews it" in decision.message
    later = await admission.check(ask("a lighthouse"))
    assert later.outcome is Outcome.BANNED and later.retry_after_s is None
    assert [b.user_key for b in await admission.strikes.bans()] == [BOB.key]


async def test_banned_and_rate_limited_requests_never_reach_moderation(admission: Admission) -> None:
    await admission.strikes.ban(BOB.key, "discord:999", duration_s=60)
    assert (await admission.check(ask("a porn scene"))).outcome is Outcome.BANNED
    await admission.strikes.unban(BOB.key, "discord:999")
    assert (await admission.check(ask("a lighthouse"))).admitted
    assert (await admission.check(ask("a castle"))).admitted
    limited = await admission.check(ask("a porn scene"))
    assert limited.outcome is Outcome.RATE_LIMITED and limited.reason == "queue"
    await admission.job_finished(BOB)
    limited = await admission.check(ask("a porn scene"))
    assert limited.outcome is Outcome.RATE_LIMITED and limited.reason == "burst"
    assert limited.retry_after_s == pytest.approx(120.0) and "Try again in 2 min" in limited.message
    # Neither the ban nor the limits let the prompt through to moderation: no strike, no review item.
    assert await admission.strikes.strike_count(BOB.key) == 0
    assert await admission.review.list(None) == []


async def test_moderated_prompts_consume_rate_budget(admission: Admission) -> None:
    assert (await admission.check(ask("a man without a single piece of clothing on"))).outcome is Outcome.REVIEW
    assert (await admission.check(ask("Elmo holding a gun"))).outcome is Outcome.REVIEW
    assert (await admission.check(ask("a lighthouse"))).outcome is Outcome.RATE_LIMITED


async def test_admins_and_moderators_skip_rate_limits_not_moderation(tmp_path: Path, clock: ManualClock) -> None:
    admission = await build(tmp_path, clock, moderation={"admin_user_ids": ["discord:222"]})
    try:
        for _ in range(10):
            assert (await admission.check(ask("a lighthouse"))).admitted
        carol = Requester(platform="slack", user_id="U3", server_id="T1")
        for _ in range(10):
            assert (await admission.check(ask("a lighthouse", carol), is_moderator=True)).admitted
        assert (await admission.check(ask("a porn scene"))).outcome is Outcome.BLOCKED
    finally:
        await admission.close()


async def test_hundred_concurrent_requests_admit_exactly_the_allowed_number(tmp_path: Path, clock: ManualClock) -> None:
    admission = await build(tmp_path, clock, limits={"burst": 10, "max_queued_per_user": 1000})
    try:
        decisions = await asyncio.gather(*(admission.check(ask(f"a lighthouse, number {i}")) for i in range(100)))
        outcomes = [d.outcome for d in decisions]
        assert outcomes.count(Outcome.ADMITTED) == 5  # prompts_per_window
        assert outcomes.count(Outcome.RATE_LIMITED) == 95
    finally:
        await admission.close()


async def test_moderation_switched_off_still_limits(tmp_path: Path, clock: ManualClock) -> None:
    admission = await build(tmp_path, clock, moderation={"enabled": False})
    try:
        assert (await admission.check(ask("a porn scene"))).admitted
        assert (await admission.check(ask("a porn scene"))).admitted
        assert (await admission.check(ask("a porn scene"))).outcome is Outcome.RATE_LIMITED
    finally:
        await admission.close()


async def test_moderation_failure_holds_the_prompt(tmp_path: Path, clock: ManualClock) -> None:
    broken = PromptModerator(shared_policy(), semantic=SemanticScorer(shared_policy().semantic, "/no/such/model"))
    admission = await build(tmp_path, clock, prompts=broken)
    try:
        decision = await admission.check(ask("a lighthouse"))
        assert decision.outcome is Outcome.REVIEW and decision.reason == "unsure"
        assert "Traceback" not in decision.message
    finally:
        await admission.close()


async def test_submission_failure_refunds(admission: Admission) -> None:
    assert (await admission.check(ask("a lighthouse"))).admitted
    await admission.submission_failed(BOB)
    assert await admission.limiter.active_jobs(BOB.key) == 0
    assert (await admission.check(ask("a lighthouse"))).admitted
    assert (await admission.check(ask("a lighthouse"))).admitted


async def test_open_builds_everything_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reuse_loaded_model(monkeypatch)
    admission = await Admission.open(make_settings(tmp_path))
    try:
        assert admission.moderator.semantic is not None and admission.moderator.semantic.loaded
        assert (await admission.check(ask("a lighthouse"))).admitted
        assert (tmp_path / "imagine.db").exists()
    finally:
        await admission.close()
