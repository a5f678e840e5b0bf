"""Admission and moderator review in Discord, at the wire level: rate-limit and block refusals are private, a
held prompt goes to the moderator channel with Approve / Reject, only members with a moderator role decide."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bots import messages
from config.settings import Settings
from engine.screening import ScreeningResult
from moderation.review import ReviewState
from tests.discord_harness import DiscordRig, discord_settings, jpeg_sizes, start_rig
from tests.standins.discord_server import DiscordStandIn, InteractionRecord, StoredMessage

pytestmark = pytest.mark.timeout(240)


def moderated_settings(tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn) -> Settings:
    base = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    return replace(
        base,
        moderation=replace(base.moderation, embedding=False),
        limits=replace(base.limits, burst=2, max_queued_per_user=5),
    )


@pytest.fixture
async def rig(tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn) -> AsyncIterator[DiscordRig]:
    running = await start_rig(moderated_settings(tmp_path, tiny_model_dir, standin), standin, moderated=True)
    yield running
    await running.stop()


async def review_post(rig: DiscordRig) -> StoredMessage:
    channel = rig.standin.moderator_channel_id
    return await rig.standin.wait_until(
        lambda: next(iter(rig.standin.channel_messages(channel)), None), what="a review post"
    )


def thinking_message_removed(standin: DiscordStandIn, command: InteractionRecord) -> bool:
    return standin.messages[str(command.original_message_id)].deleted


async def test_rate_limited_prompt_is_refused_privately_with_when_to_retry(
    rig: DiscordRig, standin: DiscordStandIn
) -> None:
    alice = standin.make_user("alice")
    for prompt in ("a quiet harbour", "a quiet harbour at dusk"):
        await standin.send_command(alice, {"prompt": prompt})
    third = await standin.send_command(alice, {"prompt": "a quiet harbour at night"})
    refusal = await rig.message_saying("You're sending prompts quickly. Try again in ")
    assert refusal.ephemeral and thinking_message_removed(standin, third)
    assert "a quiet harbour at night" not in {m.content for m in standin.messages.values() if not m.deleted}


async def test_blocked_prompt_is_refused_privately_with_a_category(rig: DiscordRig, standin: DiscordStandIn) -> None:
    command = await standin.send_command(standin.make_user("bob"), {"prompt": "explicit porn of two adults"})
    refusal = await rig.message_saying("aren't allowed here")
    assert refusal.ephemeral and "porn" not in refusal.content
    assert thinking_message_removed(standin, command)
    assert rig.engine.pipeline_calls == 0 and standin.channel_messages(standin.moderator_channel_id) == []


async def test_review_in_chat_only_moderators_decide_and_approval_delivers(
    rig: DiscordRig, standin: DiscordStandIn
) -> None:
    carol, mallory, mod = (standin.make_user(name) for name in ("carol", "mallory", "mod"))
    command = await standin.send_command(carol, {"prompt": "Elmo holding a bloody knife"})
    status = await rig.message_saying("Your prompt needs a quick look from a moderator")
    assert status.id == command.original_message_id and not status.ephemeral
    post = await review_post(rig)
    approve, reject = post.custom_ids
    assert approve.startswith("imagine:approve:") and reject.startswith("imagine:reject:")
    assert f"discord user {carol.id}" in post.content and "Elmo holding a bloody knife" in post.content
    item_id = approve.split(":")[2]

    outsider = await standin.click(post.id, approve, mallory, role_ids=[standin.member_role.id])
    refusal = await rig.message_saying(messages.NOT_A_MODERATOR)
    assert refusal.ephemeral and outsider.callback_type == 6
    assert rig.admission is not None
    assert (await rig.admission.review.get(item_id)).state is ReviewState.PENDING

    await standin.click(post.id, approve, mod, role_ids=[standin.moderator_role.id])
    (images,) = await rig.images_messages()
    notice = await rig.message_saying("A moderator approved your prompt")
    assert notice.ephemeral and len(images.files) == 4
    assert images.payload["channel_id"] == standin.channel_id
    decided = standin.messages[post.id]
    assert decided.content.startswith(f"✅ Approved by discord:{mod.id}") and decided.custom_ids == []
    await standin.wait_until(lambda: standin.messages[status.id].content.startswith(messages.DONE))
    audit = await rig.admission.audit.entries(target=f"review:{item_id}")
    assert sorted((entry.actor, entry.action, entry.outcome) for entry in audit) == sorted(
        [
            (f"discord:{mallory.id}", "approve", "refused"),
            (f"discord:{mod.id}", "approve", "ok"),
        ]
    )


@pytest.mark.parametrize("status", [429, 500])
async def test_a_review_post_that_fails_is_retried_and_posted_once(
    status: int, rig: DiscordRig, standin: DiscordStandIn
) -> None:
    """The moderator channel post meets a 429, or a 500 after Discord created it (only its answer was lost): the
    retry carries the same nonce with enforce_nonce, and the moderators see one post."""
    posts_path = rf"/channels/{standin.moderator_channel_id}/messages"
    standin.fail_next("POST", posts_path, status, commit=status == 500, retry_after=0.01)
    await standin.send_command(standin.make_user("carol"), {"prompt": "Elmo holding a bloody knife"})
    await rig.message_saying("Your prompt needs a quick look from a moderator")
    posts = await standin.wait_until(lambda: (found := standin.requests_to("POST", posts_path))[1:] and found)
    assert [r.status for r in posts] == [status, 200]
    assert posts[0].json["nonce"] == posts[1].json["nonce"] and posts[1].json["enforce_nonce"] is True
    (post,) = standin.channel_messages(standin.moderator_channel_id)
    assert post.custom_ids[0].startswith("imagine:approve:")


async def test_rejection_updates_the_post_and_tells_the_requester(rig: DiscordRig, standin: DiscordStandIn) -> None:
    dave, mod = standin.make_user("dave"), standin.make_user("mod")
    await standin.send_command(dave, {"prompt": "Pikachu smoking crack"}, in_guild=False)
    post = await review_post(rig)
    assert "in a DM" in post.content
    await standin.click(post.id, post.custom_ids[1], mod, role_ids=[standin.moderator_role.id])
    notice = await rig.message_saying("A moderator declined your prompt")
    assert notice.ephemeral and notice.payload["channel_id"] == standin.dm_channel_id(dave)
    assert standin.messages[post.id].content.startswith("❌ Rejected by") and standin.messages[post.id].custom_ids == []
    assert rig.engine.pipeline_calls == 0 and standin.messages_with_files() == []


async def test_an_image_filter_hit_shows_moderators_the_blurred_images(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    def flag_everything(image: Any) -> ScreeningResult:  # the detector's answer is the boundary
        return ScreeningResult(True, ("FEMALE_BREAST_EXPOSED",))

    settings = moderated_settings(tmp_path, tiny_model_dir, standin)
    rig = await start_rig(settings, standin, moderated=True, screener=flag_everything)
    try:
        erin, mod = standin.make_user("erin"), standin.make_user("mod")
        await standin.send_command(erin, {"prompt": "a beach at noon"})
        (delivered,) = await rig.images_messages()
        assert "withheld by the safety filter" in delivered.content
        post = await review_post(rig)
        assert len(jpeg_sizes(post)) == 4 and "withheld" in post.content
        await standin.click(post.id, post.custom_ids[0], mod, role_ids=[standin.moderator_role.id])
        released = (await rig.images_messages(3))[-1]
    finally:
        await rig.stop()
    assert released.payload["channel_id"] == standin.channel_id and len(released.files) == 4
    assert released.files[0].data != delivered.files[0].data  # the originals, not the blurred copies
    with Image.open(io.BytesIO(released.files[0].data)) as image:
        assert image.format == "JPEG"


async def test_a_review_decided_after_a_restart_updates_the_old_post(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    """The new process has never seen the review post: the button still works (its id says what to do), and the
    post is found again in the moderator channel's history to be updated."""
    settings = moderated_settings(tmp_path, tiny_model_dir, standin)
    first = await start_rig(settings, standin, moderated=True)
    try:
        frank, mod = standin.make_user("frank"), standin.make_user("mod")
        await standin.send_command(frank, {"prompt": "Elmo holding a bloody knife"})
        post = await review_post(first)
    finally:
        await first.stop()

    second = await start_rig(settings, standin, moderated=True)
    try:
        await standin.click(post.id, post.custom_ids[0], mod, role_ids=[standin.moderator_role.id])
        (images,) = await second.images_messages()
        await standin.wait_until(lambda: standin.messages[post.id].content.startswith("✅ Approved"))
    finally:
        await second.stop()
    assert standin.messages[post.id].custom_ids == [] and images.payload["channel_id"] == standin.channel_id
    assert standin.requests_to("GET", rf"/channels/{standin.moderator_channel_id}/messages")  # the history scan
