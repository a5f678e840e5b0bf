"""Issue 15 in Discord, at the wire level (real discord.py against the stand-in): style presets (the `style`
option with autocomplete, /imagine-styles), the Delete button (requester and moderators only, after a restart
too) and per-server settings by members with Manage Server (/imagine-settings)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bots import messages
from config.settings import Settings, StylePreset
from engine.store import JobRecord
from moderation.audit import AuditLog
from tests.discord_harness import DiscordRig, discord_settings, start_rig
from tests.standins.discord_server import DiscordStandIn, InteractionRecord, StoredMessage

pytestmark = pytest.mark.timeout(240)

CALLBACK_MESSAGE = 4


def feature_settings(tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn) -> Settings:
    """The default presets, plus one whose template makes any prompt explicit (to show what moderation sees)."""
    base = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    lewd = StylePreset(prompt="{prompt}, explicit porn", description="a preset moderation must catch")
    return replace(
        base,
        styles={**base.styles, "lewd": lewd},
        moderation=replace(base.moderation, embedding=False),
        limits=replace(base.limits, burst=2, max_queued_per_user=5),
    )


@pytest.fixture
async def rig(tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn) -> AsyncIterator[DiscordRig]:
    running = await start_rig(feature_settings(tmp_path, tiny_model_dir, standin), standin, moderated=True)
    yield running
    await running.stop()


def job_of(message: StoredMessage) -> str:
    return message.custom_ids[0].split(":")[2]


async def record_of(rig: DiscordRig, message: StoredMessage) -> JobRecord:
    record = await rig.engine.lookup(job_of(message))
    assert record is not None
    return record


async def answer_to(standin: DiscordStandIn, command: InteractionRecord) -> StoredMessage:
    """The message an interaction was answered with at once (callback type 4)."""
    await standin.wait_until(lambda: command.callback_type is not None, what="an answer")
    assert command.callback_type == CALLBACK_MESSAGE
    return standin.messages[str(command.original_message_id)]


async def set_setting(standin: DiscordStandIn, key: str, value: str, *, admin: bool = True) -> StoredMessage:
    user = standin.make_user("admin" if admin else "member")
    command = await standin.send_command(
        user, {"setting": key, "value": value}, name="imagine-settings", manage_server=admin
    )
    return await answer_to(standin, command)


# ---- style presets ------------------------------------------------------------------------------------------


async def test_commands_are_registered_with_style_autocomplete_and_admin_only_settings(
    rig: DiscordRig, standin: DiscordStandIn
) -> None:
    commands = {command["name"]: command for command in standin.synced_commands}
    assert {"imagine", "imagine-styles", "imagine-settings"} <= set(commands)
    style = next(option for option in commands["imagine"]["options"] if option["name"] == "style")
    assert style["autocomplete"] is True
    assert int(commands["imagine-settings"]["default_member_permissions"]) == 0x20  # Manage Server
    setting = next(option for option in commands["imagine-settings"]["options"] if option["name"] == "setting")
    assert "moderation" in [choice["value"] for choice in setting["choices"]]


async def test_style_autocomplete_and_the_styles_list(rig: DiscordRig, standin: DiscordStandIn) -> None:
    alice = standin.make_user("alice")
    typed = await standin.send_autocomplete(alice, {"prompt": "a fox", "style": "wat"}, focused="style")
    await standin.wait_until(lambda: typed.choices is not None, what="autocomplete choices")
    assert typed.callback_type == 8
    assert [choice["value"] for choice in typed.choices or []] == ["watercolour"]
    everything = await standin.send_autocomplete(alice, {"prompt": "a fox", "style": ""}, focused="style")
    await standin.wait_until(lambda: everything.choices is not None)
    assert len(everything.choices or []) == len(rig.settings.styles) <= 25

    listing = await answer_to(standin, await standin.send_command(alice, {}, name="imagine-styles"))
    assert listing.ephemeral
    for name in rig.settings.styles:
        assert name in listing.content


async def test_a_style_shapes_the_prompt_moderated_and_delivered(rig: DiscordRig, standin: DiscordStandIn) -> None:
    alice = standin.make_user("alice")
    await standin.send_command(alice, {"prompt": "a lighthouse", "negative": "fog", "style": "Oil-Painting"})
    (images,) = await rig.images_messages()
    assert "a lighthouse, oil painting on canvas" in images.content and "style oil-painting" in images.content
    record = await record_of(rig, images)
    assert record.request.style == "oil-painting" and record.request.guidance_scale == 6.0
    assert record.request.negative_prompt == "fog, photo, text, watermark"

    # Moderation judges the templated prompt: a harmless prompt in a style that makes it explicit is blocked.
    blocked = await standin.send_command(standin.make_user("bob"), {"prompt": "a cat on a sofa", "style": "lewd"})
    refusal = await rig.message_saying("aren't allowed here")
    assert refusal.ephemeral and standin.messages[str(blocked.original_message_id)].deleted
    assert len(standin.messages_with_files()) == 1


async def test_an_unknown_style_is_refused_with_the_list(rig: DiscordRig, standin: DiscordStandIn) -> None:
    await standin.send_command(standin.make_user("carol"), {"prompt": "a lighthouse", "style": "cubism"})
    refusal = await rig.message_saying("There is no style called “cubism”")
    assert refusal.ephemeral and "oil-painting" in refusal.content and "watercolour" in refusal.content
    assert rig.engine.pipeline_calls == 0 and standin.messages_with_files() == []


# ---- the Delete button -----------------------------------------------------------------------------------------


async def delivered(rig: DiscordRig, standin: DiscordStandIn, owner_name: str) -> tuple[StoredMessage, JobRecord]:
    await standin.send_command(standin.make_user(owner_name), {"prompt": f"a kite for {owner_name}"})
    (images,) = await rig.images_messages()
    record = await record_of(rig, images)
    assert all(on_disk(record))
    return images, record


def on_disk(record: JobRecord) -> list[bool]:
    return [Path(image.path).is_file() for image in record.images]


def delete_id(message: StoredMessage) -> str:
    (button,) = [custom_id for custom_id in message.custom_ids if custom_id.startswith("imagine:d:")]
    return button


async def test_delete_by_anyone_else_is_refused_privately_and_removes_nothing(
    rig: DiscordRig, standin: DiscordStandIn
) -> None:
    images, record = await delivered(rig, standin, "dana")
    mallory = standin.make_user("mallory")
    click = await standin.click(images.id, delete_id(images), mallory)
    notice = await rig.message_saying(messages.NOT_YOURS_TO_DELETE)
    assert notice.ephemeral and click.callback_type == 6
    assert not standin.messages[images.id].deleted
    assert all(on_disk(record))
    assert not (await record_of(rig, images)).deleted
    (entry,) = await AuditLog(rig.service.database).entries(target=f"job:{record.id}")  # type: ignore[union-attr]
    assert (entry.actor, entry.action, entry.outcome) == (f"discord:{mallory.id}", "delete", "refused")


async def test_delete_by_the_requester_removes_message_files_and_marks_the_job(
    rig: DiscordRig, standin: DiscordStandIn
) -> None:
    images, record = await delivered(rig, standin, "erin")
    owner = next(r.user for r in standin.interactions.values() if r.user.username == "erin")
    await standin.click(images.id, delete_id(images), owner)
    await rig.message_saying(messages.DELETED)
    assert standin.messages[images.id].deleted
    assert standin.requests_to("DELETE", r"/webhooks/\d+/[^/]+/messages/@original")
    assert not any(on_disk(record))
    assert (await record_of(rig, images)).deleted
    # The job's other buttons now answer that the images are gone.
    upscale = await standin.click(
        standin.add_bot_message([f"imagine:u:{record.id}:0"]), f"imagine:u:{record.id}:0", owner
    )
    await rig.message_saying(messages.UNKNOWN_JOB)
    assert upscale.callback_type == 5


async def test_delete_on_an_upscaled_image_takes_down_that_message(rig: DiscordRig, standin: DiscordStandIn) -> None:
    images, record = await delivered(rig, standin, "hugo")
    owner = next(r.user for r in standin.interactions.values() if r.user.username == "hugo")
    upscale = await standin.click(images.id, f"imagine:u:{record.id}:2", owner)
    await rig.images_messages(2)
    single = standin.messages[str(upscale.original_message_id)]
    await standin.click(single.id, delete_id(single), owner)
    await rig.message_saying(messages.DELETED)
    assert standin.messages[single.id].deleted
    assert not any(on_disk(record)) and (await record_of(rig, images)).deleted


async def test_delete_by_a_moderator_works(rig: DiscordRig, standin: DiscordStandIn) -> None:
    images, record = await delivered(rig, standin, "frank")
    moderator = standin.make_user("mod")
    await standin.click(images.id, delete_id(images), moderator, role_ids=[standin.moderator_role.id])
    await rig.message_saying(messages.DELETED)
    assert standin.messages[images.id].deleted
    assert not any(on_disk(record))
    (entry,) = await AuditLog(rig.service.database).entries(target=f"job:{record.id}")  # type: ignore[union-attr]
    assert entry.outcome == "ok" and "moderator" in entry.detail


async def test_delete_works_after_a_restart(tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn) -> None:
    settings = feature_settings(tmp_path, tiny_model_dir, standin)
    first = await start_rig(settings, standin)
    try:
        images, record = await delivered(first, standin, "gina")
    finally:
        await first.stop()
    owner = next(r.user for r in standin.interactions.values() if r.user.username == "gina")
    second = await start_rig(settings, standin)
    try:
        await standin.click(images.id, delete_id(images), owner)
        await second.message_saying(messages.DELETED)
    finally:
        await second.stop()
    assert standin.messages[images.id].deleted
    assert not any(on_disk(record))


# ---- per-server settings -------------------------------------------------------------------------------------------


async def test_settings_by_a_member_without_manage_server_are_refused_and_audited(
    rig: DiscordRig, standin: DiscordStandIn
) -> None:
    member = standin.make_user("member")
    answer = await set_setting(standin, "moderation", "strict", admin=False)
    assert answer.ephemeral and answer.content == messages.NOT_AN_ADMIN
    shown = await standin.send_command(member, {}, name="imagine-settings", manage_server=True)
    summary = await answer_to(standin, shown)  # an admin sees it unchanged
    assert summary.ephemeral and "moderation: normal" in summary.content
    (entry,) = await AuditLog(rig.service.database).entries()  # type: ignore[union-attr]
    assert (entry.action, entry.outcome, entry.target) == (
        "server_settings",
        "refused",
        f"server:discord:{standin.guild.id}",
    )


async def test_allowed_channels_and_default_style_take_effect_on_the_next_command(
    rig: DiscordRig, standin: DiscordStandIn
) -> None:
    other_channel = standin.moderator_channel_id  # the stand-in guild's second channel
    answer = await set_setting(standin, "channels", f"<#{other_channel}>")
    assert answer.ephemeral and f"channels: {other_channel}" in answer.content
    await standin.send_command(standin.make_user("hal"), {"prompt": "a red barn"})
    refusal = await rig.message_saying("allow imagine only in some channels")
    assert refusal.ephemeral and rig.engine.pipeline_calls == 0

    await set_setting(standin, "channels", "all")
    answer = await set_setting(standin, "style", "watercolour")
    assert "style: watercolour" in answer.content
    await standin.send_command(standin.make_user("hal"), {"prompt": "a red barn"})
    (images,) = await rig.images_messages()
    assert "a red barn, watercolour painting" in images.content
    entries = await AuditLog(rig.service.database).entries()  # type: ignore[union-attr]
    changes = [e for e in entries if e.action == "server_settings" and e.outcome == "ok"]
    assert [e.detail for e in changes] == ["style = watercolour", "channels = all", f"channels = <#{other_channel}>"]
    assert all(e.target == f"server:discord:{standin.guild.id}" for e in changes)


async def test_strict_moderation_holds_a_borderline_prompt(rig: DiscordRig, standin: DiscordStandIn) -> None:
    borderline = "a woman in a bikini on the beach"
    await standin.send_command(standin.make_user("ivy"), {"prompt": borderline})
    await rig.images_messages()  # normal moderation lets it through

    answer = await set_setting(standin, "moderation", "strict")
    assert "moderation: strict" in answer.content
    await standin.send_command(standin.make_user("ivy"), {"prompt": borderline})
    await rig.message_saying("needs a quick look from a moderator")
    post = await standin.wait_until(
        lambda: next(iter(standin.channel_messages(standin.moderator_channel_id)), None), what="a review post"
    )
    assert "strict moderation" in post.content
    assert len(standin.messages_with_files()) == 1


async def test_tighter_limits_hold_and_looser_ones_are_refused(rig: DiscordRig, standin: DiscordStandIn) -> None:
    looser = await set_setting(standin, "burst", "5")
    assert looser.ephemeral and "from 1 to 2" in looser.content
    answer = await set_setting(standin, "burst", "1")
    assert "burst: 1 (global 2)" in answer.content
    jack = standin.make_user("jack")
    await standin.send_command(jack, {"prompt": "a quiet harbour"})
    await standin.send_command(jack, {"prompt": "a quiet harbour at dusk"})
    refusal = await rig.message_saying("You're sending prompts quickly")
    assert refusal.ephemeral
    await rig.images_messages()
    assert len(standin.messages_with_files()) == 1


async def test_a_servers_own_moderator_role_and_review_channel(rig: DiscordRig, standin: DiscordStandIn) -> None:
    role, channel = standin.member_role.id, standin.other_channel_id
    assert f"moderator-role: {role}" in (await set_setting(standin, "moderator-role", f"<@&{role}>")).content
    assert f"moderator-channel: {channel}" in (await set_setting(standin, "moderator-channel", f"<#{channel}>")).content

    await standin.send_command(standin.make_user("kim"), {"prompt": "Elmo holding a bloody knife"})
    post = await standin.wait_until(lambda: next(iter(standin.channel_messages(channel)), None), what="a review post")
    assert standin.channel_messages(standin.moderator_channel_id) == []
    approve = next(custom_id for custom_id in post.custom_ids if custom_id.startswith("imagine:approve:"))
    member_moderator = standin.make_user("lee")
    await standin.click(post.id, approve, member_moderator, role_ids=[role])
    (images,) = await rig.images_messages()
    assert standin.messages[post.id].content.startswith("✅ Approved")

    # Members of the server's moderator role may delete anyone's images there.
    await standin.click(images.id, delete_id(images), member_moderator, role_ids=[role])
    await rig.message_saying(messages.DELETED)
    assert standin.messages[images.id].deleted


async def test_a_decision_after_a_restart_edits_the_post_in_the_servers_review_channel(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    settings = feature_settings(tmp_path, tiny_model_dir, standin)
    channel = standin.other_channel_id
    first = await start_rig(settings, standin, moderated=True)
    try:
        await set_setting(standin, "moderator-channel", f"<#{channel}>")
        await standin.send_command(standin.make_user("max"), {"prompt": "Elmo holding a bloody knife"})
        post = await standin.wait_until(lambda: next(iter(standin.channel_messages(channel)), None), what="a post")
    finally:
        await first.stop()
    second = await start_rig(
        settings, standin, moderated=True
    )  # it knows nothing of where the post went but the server's settings
    try:
        approve = next(custom_id for custom_id in post.custom_ids if custom_id.startswith("imagine:approve:"))
        await standin.click(post.id, approve, standin.make_user("mod"), role_ids=[standin.moderator_role.id])
        await second.images_messages()
        assert standin.messages[post.id].content.startswith("✅ Approved")
        assert standin.channel_messages(standin.moderator_channel_id) == []  # not posted anew in ours
    finally:
        await second.stop()
