"""Strikes, bans, the review queue's state machine and the audit log, on a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.settings import ModerationSettings
from engine.requests import GenerationRequest, Requester
from moderation.audit import AuditLog
from moderation.errors import AlreadyDecided, ReviewExpired, ReviewItemNotFound
from moderation.review import ReviewQueue, ReviewState
from moderation.strikes import StrikeBook
from moderation.verdict import Action, Verdict
from storage.database import Database
from tests.moderation_support import ManualClock
from tests.storage_support import postgres_url  # noqa: F401 (a fixture)

SETTINGS = ModerationSettings(strikes_to_ban=3, strike_window_s=3600.0, ban_duration_s=600.0, review_expiry_s=900.0)
ALICE = Requester(platform="discord", user_id="111", server_id="g1", channel_id="c1", display_name="alice")
HELD = Verdict(Action.REVIEW, ("nudity",), ("nudity or adult content (not explicit): 'nude'",), "nudity")


def request(prompt: str = "a nude statue", requester: Requester = ALICE) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        requester=requester,
        negative_prompt="blurry",
        seed=42,
        aspect="16:9",
        delivery={"interaction_token": "tok", "channel_id": "c1"},
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def db(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Database]:
    database = await Database.open(f"sqlite:///{tmp_path}/imagine.db")
    yield database
    await database.close()


# -- strikes and bans -------------------------------------------------------------------------------------


async def test_strikes_within_the_window_lead_to_a_temporary_ban(db: Database, clock: ManualClock) -> None:
    book = StrikeBook(db, SETTINGS, clock=clock)
    assert (await book.add_strike("discord:111", "sexual", "porn")).ban is None
    clock.advance(1000)
    assert (await book.add_strike("discord:111", "sexual", "porn")).ban is None
    clock.advance(1000)
    outcome = await book.add_strike("discord:111", "gore", "gore")
    assert outcome.strikes == 3 and outcome.ban is not None
    assert outcome.ban.expires_at == clock.now + 600.0 and not outcome.ban.pending_review
    assert await book.active_ban("discord:111") == outcome.ban
    clock.advance(600)
    assert await book.active_ban("discord:111") is None


async def test_old_strikes_fall_out_of_the_window(db: Database, clock: ManualClock) -> None:
    book = StrikeBook(db, SETTINGS, clock=clock)
    await book.add_strike("discord:111", "sexual", "x")
    await book.add_strike("discord:111", "sexual", "x")
    clock.advance(3601)
    outcome = await book.add_strike("discord:111", "sexual", "x")
    assert (outcome.strikes, outcome.ban) == (1, None)


async def test_minors_strike_bans_at_once_until_a_moderator_lifts_it(db: Database, clock: ManualClock) -> None:
    book = StrikeBook(db, SETTINGS, clock=clock)
    outcome = await book.add_strike("discord:111", "minors", "minor + nudity", ban_now=True)
    assert outcome.ban is not None and outcome.ban.expires_at is None and outcome.ban.pending_review
    clock.advance(10 * 365 * 86400)
    assert await book.active_ban("discord:111") == outcome.ban
    assert await book.unban("discord:111", "discord:999", "reviewed: a misunderstanding") == 1
    assert await book.active_ban("discord:111") is None


async def test_moderators_ban_unban_and_clear_strikes(db: Database, clock: ManualClock) -> None:
    book = StrikeBook(db, SETTINGS, clock=clock)
    ban = await book.ban("slack:U7", "slack:UMOD", reason="spam", duration_s=60)
    assert (await book.active_ban("slack:U7")) == ban and ban.expires_at == clock.now + 60
    assert [b.user_key for b in await book.bans()] == ["slack:U7"]
    assert await book.unban("slack:U7", "slack:UMOD") == 1
    assert await book.unban("slack:U7", "slack:UMOD") == 0
    await book.add_strike("slack:U7", "sexual", "x")
    await book.add_strike("slack:U7", "sexual", "x")
    assert await book.clear_strikes("slack:U7", "slack:UMOD") == 2
    assert (await book.add_strike("slack:U7", "sexual", "x")).strikes == 1
    with pytest.raises(ValueError, match="greater than 0"):
        await book.ban("slack:U7", "slack:UMOD", duration_s=0)


async def test_strikes_and_bans_survive_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    url = f"sqlite:///{tmp_path}/imagine.db"
    first = await Database.open(url)
    book = StrikeBook(first, SETTINGS, clock=clock)
    await book.add_strike("discord:111", "sexual", "x")
    await book.add_strike("discord:111", "sexual", "x")
    await book.ban("discord:222", "cli:root")
    await first.close()
    second = await Database.open(url)
    book = StrikeBook(second, SETTINGS, clock=clock)
    assert await book.strike_count("discord:111") == 2
    assert (await book.active_ban("discord:222")) is not None
    assert (await book.add_strike("discord:111", "sexual", "x")).ban is not None
    await second.close()


# -- the review queue -------------------------------------------------------------------------------------


async def test_review_item_keeps_the_whole_request(db: Database) -> None:
    queue = ReviewQueue(db, expiry_s=900)
    item = await queue.submit(request(), HELD)
    again = await queue.get(item.id)
    assert again.request == request() and again.verdict == HELD and again.state is ReviewState.PENDING
    assert [i.id for i in await queue.list()] == [item.id]


async def test_approve_then_claimed_exactly_once(db: Database) -> None:
    queue = ReviewQueue(db, expiry_s=900)
    item = await queue.submit(request(), HELD)
    approved = await queue.approve(item.id, "discord:999", "art")
    assert (approved.state, approved.decided_by, approved.decision_reason) == (
        ReviewState.APPROVED,
        "discord:999",
        "art",
    )
    assert await queue.claim_rejected() == []
    claimed = await queue.claim_approved()
    assert [c.id for c in claimed] == [item.id] and claimed[0].request == request()
    assert await queue.claim_decided() == []


async def test_state_machine_rejects_misuse(db: Database, clock: ManualClock) -> None:
    queue = ReviewQueue(db, expiry_s=900, clock=clock)
    first = await queue.submit(request("one"), HELD)
    second = await queue.submit(request("two"), HELD)
    await queue.approve(first.id, "discord:999")
    with pytest.raises(AlreadyDecided, match=f"{first.id} was already approved by discord:999"):
        await queue.approve(first.id, "discord:998")
    await queue.reject(second.id, "discord:999", "not here")
    with pytest.raises(AlreadyDecided, match="already rejected"):
        await queue.approve(second.id, "discord:999")
    with pytest.raises(ReviewItemNotFound):
        await queue.reject("0000000000", "discord:999")
    third = await queue.submit(request("three"), HELD)
    clock.advance(900)
    with pytest.raises(ReviewExpired):
        await queue.approve(third.id, "discord:999")
    assert (await queue.get(third.id)).state is ReviewState.EXPIRED
    assert (await queue.get(first.id)).decided_by == "discord:999"  # the refused attempt changed nothing


async def test_a_process_claims_only_the_platforms_it_serves(db: Database) -> None:
    queue = ReviewQueue(db, expiry_s=900)
    on_discord = await queue.submit(request(), HELD)
    on_slack = await queue.submit(request(requester=Requester(platform="slack", user_id="U1")), HELD)
    for item in (on_discord, on_slack):
        await queue.approve(item.id, "cli:root")
    assert await queue.claim_decided(platforms=[]) == []
    assert [i.id for i in await queue.claim_decided(platforms=["slack", "web"])] == [on_slack.id]
    assert [i.id for i in await queue.claim_decided()] == [on_discord.id]


async def test_expired_items_are_handed_out_so_the_requester_hears(db: Database, clock: ManualClock) -> None:
    queue = ReviewQueue(db, expiry_s=900, clock=clock)
    item = await queue.submit(request(), HELD)
    clock.advance(899)
    assert await queue.claim_decided() == []
    clock.advance(1)
    claimed = await queue.claim_decided()
    assert [(c.id, c.state) for c in claimed] == [(item.id, ReviewState.EXPIRED)]


async def test_concurrent_claims_from_two_processes_never_share_an_item(tmp_path: Path, clock: ManualClock) -> None:
    url = f"sqlite:///{tmp_path}/imagine.db"
    serving, other = await Database.open(url), await Database.open(url)
    queues = [ReviewQueue(serving, expiry_s=900, clock=clock), ReviewQueue(other, expiry_s=900, clock=clock)]
    ids = [(await queues[0].submit(request(f"p{i}"), HELD)).id for i in range(30)]
    claims: list[list[str]] = [[], []]

    async def decide_and_claim(index: int) -> None:
        for item_id in ids[index::2]:
            await queues[index].approve(item_id, "cli:root")
            claims[index] += [item.id for item in await queues[index].claim_approved()]
            claims[1 - index] += [item.id for item in await queues[1 - index].claim_approved()]

    await asyncio.gather(decide_and_claim(0), decide_and_claim(1))
    everything = claims[0] + claims[1]
    assert sorted(everything) == sorted(ids)  # each item handed out once, to exactly one caller
    await serving.close()
    await other.close()


# -- review posts' leases --------------------------------------------------------------------------------


async def test_a_staged_post_is_taken_over_only_once_its_lease_runs_out(db: Database, clock: ManualClock) -> None:
    """A process making a post (owner "a") keeps it while it renews the lease; once it stops renewing (it died),
    another ("b") takes it over, and "a" then learns it must not post it."""
    queue = ReviewQueue(db, expiry_s=900, clock=clock)
    item = await queue.submit(request(), HELD)
    await queue.stage_post(item.id, '{"post": 1}', "a", lease_s=60)
    assert await queue.claim_unposted("b", 60, ["discord"]) == []
    clock.advance(59)
    assert await queue.renew_posts("a", [item.id], 60) == {item.id}
    clock.advance(59)
    assert await queue.claim_unposted("b", 60, ["discord"]) == []  # renewed at 59 s: held until 119 s
    clock.advance(1)
    assert await queue.claim_unposted("b", 60, ["slack"]) == []  # only a process that can post it takes it
    assert await queue.claim_unposted("b", 60, ["discord"]) == [(item.id, '{"post": 1}')]
    assert await queue.renew_posts("a", [item.id], 60) == set()
    assert await queue.renew_posts("b", [item.id], 60) == {item.id}
    await queue.mark_posted(item.id)
    clock.advance(3600)
    assert await queue.claim_unposted("c", 60, ["discord"]) == []  # made: nobody posts it again
    assert await queue.renew_posts("b", [item.id], 60) == set()


async def test_released_posts_are_taken_over_at_once_and_decided_items_are_not(
    db: Database, clock: ManualClock
) -> None:
    queue = ReviewQueue(db, expiry_s=900, clock=clock)
    waiting, decided, made = [await queue.submit(request(f"p{i}"), HELD) for i in range(3)]
    for item in (waiting, decided, made):
        await queue.stage_post(item.id, f'"{item.id}"', "a", lease_s=60)
    await queue.approve(decided.id, "cli:root")
    await queue.mark_posted(made.id)
    assert await queue.release_posts("a") == 1  # a stopping process hands back what it did not post
    assert await queue.claim_unposted("b", 60, ["discord"]) == [(waiting.id, f'"{waiting.id}"')]
    assert await queue.release_posts("a") == 0  # no longer its own


async def test_concurrent_take_overs_from_two_processes_never_share_a_post(tmp_path: Path, clock: ManualClock) -> None:
    await take_over_from_two_processes(f"sqlite:///{tmp_path}/imagine.db", clock)


async def test_concurrent_take_overs_on_postgresql_never_share_a_post(
    postgres_url: str,  # noqa: F811
    clock: ManualClock,
) -> None:
    await take_over_from_two_processes(postgres_url, clock)


async def take_over_from_two_processes(url: str, clock: ManualClock) -> None:
    first, second = await Database.open(url), await Database.open(url)
    try:
        queues = [ReviewQueue(first, expiry_s=900, clock=clock), ReviewQueue(second, expiry_s=900, clock=clock)]
        ids = [(await queues[0].submit(request(f"p{i}"), HELD)).id for i in range(30)]
        for item_id in ids:  # a run that died with every post unmade
            await queues[0].stage_post(item_id, "{}", "dead", lease_s=60)
        clock.advance(60)
        claims: list[list[str]] = [[], []]

        async def take_over(index: int) -> None:
            for _ in range(10):
                claimed = await queues[index].claim_unposted(f"p{index}", 60, ["discord"])
                claims[index] += [item_id for item_id, _ in claimed]

        await asyncio.gather(take_over(0), take_over(1))
    finally:
        await first.close()
        await second.close()
    assert sorted(claims[0] + claims[1]) == sorted(ids)  # each post taken over once, by exactly one process


# -- the audit log -------------------------------------------------------------------------------------


async def test_every_moderator_action_is_audited(db: Database, clock: ManualClock) -> None:
    queue, book = ReviewQueue(db, expiry_s=900, clock=clock), StrikeBook(db, SETTINGS, clock=clock)
    audit = AuditLog(db, clock=clock)
    item = await queue.submit(request(), HELD)
    await audit.record_refused("discord:222", "approve", item.target, "not a moderator")
    clock.advance(1)
    await queue.approve(item.id, "discord:999", "fine")
    clock.advance(1)
    with pytest.raises(AlreadyDecided):
        await queue.reject(item.id, "discord:998")
    clock.advance(1)
    await book.ban("discord:333", "discord:999", reason="spam", duration_s=60)
    clock.advance(1)
    await book.unban("discord:333", "discord:999")
    clock.advance(1)
    await book.clear_strikes("discord:333", "discord:999")
    clock.advance(1)
    await book.add_strike("discord:444", "minors", "minor + nudity", ban_now=True)
    entries = [(e.actor, e.action, e.target, e.outcome) for e in reversed(await audit.entries())]
    assert entries == [
        ("discord:222", "approve", item.target, "refused"),
        ("discord:999", "approve", item.target, "ok"),
        ("discord:998", "reject", item.target, "failed"),
        ("discord:999", "ban", "discord:333", "ok"),
        ("discord:999", "unban", "discord:333", "ok"),
        ("discord:999", "clear_strikes", "discord:333", "ok"),
        ("system", "strike", "discord:444", "ok"),
        ("system", "auto_ban", "discord:444", "ok"),
    ]
    only_item = await audit.entries(target=item.target)
    assert [e.action for e in only_item] == ["reject", "approve", "approve"]
