"""Admission answers and moderator review in Slack, with the real admission (limits, prompt moderation, review
queue, audit log) behind the adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bots import messages
from moderation.admission import Admission
from tests.moderation_support import reuse_loaded_model
from tests.slack_harness import (
    GROUP_MODERATOR,
    MODERATOR,
    MODERATOR_CHANNEL,
    MODERATOR_GROUP,
    SlackRig,
    slack_settings,
    start_rig,
)
from tests.standins.slack_server import PostedMessage, SlackStandIn

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def rig(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SlackRig]:
    reuse_loaded_model(monkeypatch)
    async with SlackStandIn(usergroups={MODERATOR_GROUP: [GROUP_MODERATOR]}) as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin)
        settings = replace(settings, limits=replace(settings.limits, burst=1))
        running = await start_rig(settings, standin, admission=await Admission.open(settings))
        yield running
        await running.stop()


def review_posts(rig: SlackRig) -> list[PostedMessage]:
    return [m for m in rig.standin.messages.values() if m.channel == MODERATOR_CHANNEL and m.thread_ts is None]


async def click(rig: SlackRig, post: PostedMessage, verb: str, user_id: str) -> None:
    (action_id,) = [
        e["action_id"]
        for b in post.blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"].startswith(f"imagine:{verb}:")
    ]
    response = await rig.sender.post(
        rig.sender.button_click(action_id, user_id=user_id, channel_id=post.channel, message_ts=post.ts)
    )
    assert response.status == 200


async def test_rate_limit_and_block_answers_are_ephemeral_with_reason_and_retry_time(rig: SlackRig) -> None:
    sender, standin = rig.sender, rig.standin
    await sender.post(sender.slash_command("a red fox", user_id="UALICE"))
    await sender.post(sender.slash_command("a blue fox", user_id="UALICE"))
    limited = await rig.ephemeral_saying("Try again in")
    assert (limited.user, limited.channel) == ("UALICE", "CGENERAL")
    assert "sending prompts quickly" in limited.text

    await sender.post(sender.slash_command("explicit sex scene in a bedroom", user_id="UBOB"))
    blocked = await rig.ephemeral_saying("aren't allowed")
    assert blocked.user == "UBOB" and "sexual content" in blocked.text

    await rig.uploads(1)
    await rig.message_saying(messages.DONE)
    # Only the admitted prompt reached the channel; the refusals were seen by their senders alone.
    public = [m.text for m in standin.messages.values()]
    assert not any("blue fox" in t or "bedroom" in t for t in public)
    assert len(standin.completed) == 1 and review_posts(rig) == []


async def test_moderators_approve_and_reject_others_are_refused_and_audited(rig: SlackRig) -> None:
    sender, standin = rig.sender, rig.standin
    await sender.post(sender.slash_command("a nude woman lying on a bed", user_id="UCAROL", channel_id="CART"))
    waiting = await rig.message_saying("needs a quick look from a moderator")
    assert waiting.channel == "CART" and "nudity" in waiting.text
    (held,) = await standin.wait_for(lambda: review_posts(rig) or None)
    assert "a nude woman lying on a bed" in held.text and "slack user UCAROL" in held.text

    await click(rig, held, "approve", user_id="UEVE")
    refusal = await rig.ephemeral_saying(messages.NOT_A_MODERATOR)
    assert (refusal.user, refusal.channel) == ("UEVE", MODERATOR_CHANNEL)
    assert held.edits == 0 and standin.completed == []

    await click(rig, held, "approve", user_id=MODERATOR)
    await standin.wait_for(lambda: held.edits == 1)
    assert held.text.startswith("✅ Approved by slack:UMOD") and not any(b["type"] == "actions" for b in held.blocks)
    told = await rig.message_saying("approved your prompt")
    assert told.channel == "CART" and told.text.startswith("<@UCAROL>")
    (upload,) = await rig.uploads(1)
    assert upload.channel_id == "CART" and len(upload.files) == 4

    await sender.post(sender.slash_command("naked man standing in a field", user_id="UDAVE", channel_id="CART"))
    second = await standin.wait_for(lambda: next((p for p in review_posts(rig) if "naked man" in p.text), None))
    await click(rig, second, "reject", user_id=GROUP_MODERATOR)
    await standin.wait_for(lambda: second.edits == 1)
    assert second.text.startswith(f"❌ Rejected by slack:{GROUP_MODERATOR}")
    declined = await rig.message_saying("declined your prompt")
    assert declined.text.startswith("<@UDAVE>")
    assert standin.calls_to("usergroups.users.list")[0].query == {"usergroup": MODERATOR_GROUP}

    assert rig.admission is not None
    audit = {(e.actor, e.action, e.outcome) for e in await rig.admission.audit.entries()}
    assert {
        ("slack:UEVE", "approve", "refused"),
        (f"slack:{MODERATOR}", "approve", "ok"),
        (f"slack:{GROUP_MODERATOR}", "reject", "ok"),
    } <= audit
    await rig.message_saying(messages.DONE)
    assert len(standin.completed) == 1  # the rejected prompt was never generated


async def test_a_decision_made_elsewhere_after_a_restart_edits_the_original_review_message(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review message's location is not kept across a restart: it is found again by its buttons in the
    channel's history (conversations.history), and edited instead of a second message being posted."""
    reuse_loaded_model(monkeypatch)
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin)
        first = await start_rig(settings, standin, admission=await Admission.open(settings))
        try:
            await first.sender.post(first.sender.slash_command("a nude woman lying on a bed", user_id="UCAROL"))
            (held,) = await standin.wait_for(lambda: review_posts(first) or None)
            assert first.admission is not None
            (item,) = await first.admission.review.list()
        finally:
            await first.stop()

        again = await start_rig(settings, standin, admission=await Admission.open(settings))
        try:
            assert again.admission is not None
            await again.admission.review.reject(item.id, "cli:alice", "not here")  # as `imagine review reject`
            await again.conversation.process_review_decisions()
            await standin.wait_for(lambda: held.edits == 1)
        finally:
            await again.stop()
    assert held.text.startswith("❌ Rejected by cli:alice") and not any(b["type"] == "actions" for b in held.blocks)
    assert review_posts(again) == [held]  # no second message in the moderators' channel
    assert standin.calls_to("conversations.history")[0].query["channel"] == MODERATOR_CHANNEL
