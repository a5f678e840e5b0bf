"""Issue 15 in Slack, at the wire level (real slack-bolt against the stand-in): `style:NAME` in the prompt and
/imagine-styles, the Delete button (chat.delete + files.delete; requester and moderators only, after a restart
too), and /imagine-settings by workspace admins (users.info)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bots import messages
from config.settings import Settings
from engine.store import JobRecord
from moderation.admission import Admission
from moderation.audit import AuditLog
from tests.slack_harness import MODERATOR, MODERATOR_CHANNEL, SlackRig, slack_settings, start_rig
from tests.standins.slack_server import CompletedUpload, PostedMessage, SlackStandIn

pytestmark = pytest.mark.timeout(300)

ADMIN = "UADMIN"


def feature_settings(tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn) -> Settings:
    base = slack_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    return replace(
        base,
        moderation=replace(base.moderation, embedding=False),
        limits=replace(base.limits, burst=2, max_queued_per_user=5),
    )


@pytest.fixture
async def rig(tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn) -> AsyncIterator[SlackRig]:
    standin.admins.add(ADMIN)
    settings = feature_settings(tmp_path, tiny_model_dir, standin)
    running = await start_rig(settings, standin, admission=await Admission.open(settings, warm_up=False))
    yield running
    await running.stop()


async def command(rig: SlackRig, name: str, text: str, user_id: str = ADMIN) -> str:
    """A slash command answered in its acknowledgement: the answer's text."""
    response = await rig.sender.post(rig.sender.slash_command(text, user_id=user_id, command=name))
    assert response.status == 200
    return response.text  # bolt answers a text-only ack as plain text, which Slack shows privately


def delete_button(message: PostedMessage) -> dict[str, str]:
    (button,) = [
        element
        for block in message.blocks
        if block["type"] == "actions"
        for element in block["elements"]
        if element["action_id"].startswith("imagine:d:")
    ]
    return button


async def delivered(rig: SlackRig, user_id: str) -> tuple[CompletedUpload, PostedMessage, JobRecord]:
    await rig.sender.post(rig.sender.slash_command(f"a kite for {user_id}", user_id=user_id))
    return await delivered_after(rig)


async def delivered_after(rig: SlackRig) -> tuple[CompletedUpload, PostedMessage, JobRecord]:
    """The first upload, its buttons message and its job."""
    upload = (await rig.uploads(1))[-1]

    def buttons() -> PostedMessage | None:
        return next(
            (
                m
                for m in rig.standin.messages.values()
                if any(e.get("action_id", "").startswith("imagine:d:") for b in m.blocks for e in b.get("elements", []))
                and m.thread_ts == upload.thread_ts
            ),
            None,
        )

    message = await rig.standin.wait_for(buttons)
    record = await rig.engine.lookup(delete_button(message)["action_id"].split(":")[2])
    assert record is not None and all(on_disk(record))
    return upload, message, record


def on_disk(record: JobRecord) -> list[bool]:
    return [Path(image.path).is_file() for image in record.images]


async def press_delete(rig: SlackRig, message: PostedMessage, user_id: str) -> None:
    button = delete_button(message)
    request = rig.sender.button_click(
        button["action_id"],
        user_id=user_id,
        channel_id=message.channel,
        message_ts=message.ts,
        thread_ts=message.thread_ts,
        value=button["value"],
    )
    response = await rig.sender.post(request)
    assert response.status == 200


# ---- style presets ------------------------------------------------------------------------------------------


async def test_styles_are_listed_and_applied_and_an_unknown_one_is_refused(rig: SlackRig) -> None:
    listing = await command(rig, "/imagine-styles", "", user_id="UALICE")
    assert all(name in listing for name in rig.settings.styles)

    await rig.sender.post(rig.sender.slash_command("a lighthouse style:oil-painting --seed 7", user_id="UALICE"))
    (upload,) = await rig.uploads(1)
    assert "a lighthouse, oil painting on canvas" in str(upload.initial_comment)
    assert "style oil-painting" in str(upload.initial_comment)

    await rig.sender.post(rig.sender.slash_command("a lighthouse style:cubism", user_id="UALICE"))
    refusal = await rig.ephemeral_saying("There is no style called “cubism”")
    assert "watercolour" in refusal.text
    await rig.settled()
    assert len(rig.standin.completed) == 1


# ---- the Delete button -----------------------------------------------------------------------------------------


async def test_delete_by_someone_else_is_refused_then_the_requester_deletes(rig: SlackRig) -> None:
    upload, message, record = await delivered(rig, "UALICE")
    file_ids = {file.file_id for file in upload.files}
    assert set(delete_button(message)["value"].split("|")[1].split(",")) == file_ids

    await press_delete(rig, message, "UMALLORY")
    await rig.ephemeral_saying(messages.NOT_YOURS_TO_DELETE)
    assert (message.channel, message.ts) in rig.standin.messages and not rig.standin.deleted_files
    assert all(on_disk(record))
    (refused,) = await AuditLog(rig.service.database).entries(target=f"job:{record.id}")  # type: ignore[union-attr]
    assert (refused.actor, refused.outcome) == ("slack:UMALLORY", "refused")

    await press_delete(rig, message, "UALICE")
    await rig.ephemeral_saying(messages.DELETED)
    assert (message.channel, message.ts) not in rig.standin.messages
    assert rig.standin.deleted_files == file_ids and rig.standin.visible_uploads() == []
    assert not any(on_disk(record))
    deleted = await rig.engine.lookup(record.id)
    assert deleted is not None and deleted.deleted


async def test_delete_by_a_moderator_works(rig: SlackRig) -> None:
    upload, message, record = await delivered(rig, "UBOB")
    await press_delete(rig, message, MODERATOR)
    await rig.ephemeral_saying(messages.DELETED)
    assert rig.standin.deleted_files == {file.file_id for file in upload.files}
    assert not any(on_disk(record))


async def test_delete_works_after_a_restart(tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn) -> None:
    settings = feature_settings(tmp_path, tiny_model_dir, standin)
    first = await start_rig(settings, standin)
    try:
        upload, message, record = await delivered(first, "UCAROL")
    finally:
        await first.stop()
    second = await start_rig(settings, standin)
    try:
        await press_delete(second, message, "UCAROL")
        await second.ephemeral_saying(messages.DELETED)
    finally:
        await second.stop()
    assert (message.channel, message.ts) not in standin.messages
    assert standin.deleted_files == {file.file_id for file in upload.files}
    assert not any(on_disk(record))


# ---- per-server settings -------------------------------------------------------------------------------------------


async def test_settings_by_a_non_admin_are_refused_and_audited(rig: SlackRig) -> None:
    assert await command(rig, "/imagine-settings", "moderation strict", user_id="UALICE") == messages.NOT_AN_ADMIN
    assert "moderation: normal" in await command(rig, "/imagine-settings", "")
    (entry,) = await AuditLog(rig.service.database).entries()  # type: ignore[union-attr]
    assert (entry.actor, entry.action, entry.outcome) == ("slack:UALICE", "server_settings", "refused")


async def test_admin_settings_take_effect_on_the_next_command(rig: SlackRig) -> None:
    answer = await command(rig, "/imagine-settings", "channels <#C0ART1234|art>")
    assert "channels: C0ART1234" in answer
    assert "not a channel" in await command(rig, "/imagine-settings", "channels #general")  # a name, not an id
    await rig.sender.post(rig.sender.slash_command("a red barn", user_id="UDAN"))
    await rig.ephemeral_saying("allow imagine only in some channels")

    await command(rig, "/imagine-settings", "channels all")
    assert "style: watercolour" in await command(rig, "/imagine-settings", "style watercolour")
    assert "burst: 1 (global 2)" in await command(rig, "/imagine-settings", "burst 1")
    await rig.sender.post(rig.sender.slash_command("a red barn", user_id="UDAN"))
    (upload,) = await rig.uploads(1)
    assert "a red barn, watercolour painting" in str(upload.initial_comment)
    await rig.sender.post(rig.sender.slash_command("a blue barn", user_id="UDAN"))
    await rig.ephemeral_saying("You're sending prompts quickly")

    assert "moderation: strict" in await command(rig, "/imagine-settings", "moderation strict")
    await rig.sender.post(rig.sender.slash_command("a woman in a bikini on the beach style:photo", user_id="UERIN"))
    await rig.message_saying("needs a quick look from a moderator")
    post = await rig.standin.wait_for(
        lambda: next((m for m in rig.standin.messages.values() if m.channel == MODERATOR_CHANNEL), None)
    )
    assert "strict moderation" in post.text
    entries = await AuditLog(rig.service.database).entries()  # type: ignore[union-attr]
    assert [e.detail for e in entries if e.outcome == "ok"] == [
        "moderation = strict",
        "burst = 1",
        "style = watercolour",
        "channels = all",
        "channels = <#C0ART1234|art>",
    ]


async def test_a_workspaces_own_moderator_group_and_review_channel(rig: SlackRig) -> None:
    rig.standin.usergroups["S0WSMODS1"] = ["UWSMOD"]
    assert "moderator-role: S0WSMODS1" in await command(
        rig, "/imagine-settings", "moderator-role <!subteam^S0WSMODS1|mods>"
    )
    assert "moderator-channel: C0REVIEW1" in await command(rig, "/imagine-settings", "moderator-channel <#C0REVIEW1>")

    await rig.sender.post(rig.sender.slash_command("Elmo holding a bloody knife", user_id="UFAY"))
    post = await rig.standin.wait_for(
        lambda: next((m for m in rig.standin.messages.values() if m.channel == "C0REVIEW1"), None)
    )
    assert not [m for m in rig.standin.messages.values() if m.channel == MODERATOR_CHANNEL]
    approve = next(
        e["action_id"]
        for b in post.blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if "approve" in e["action_id"]
    )
    click = rig.sender.button_click(approve, user_id="UWSMOD", channel_id=post.channel, message_ts=post.ts)
    assert (await rig.sender.post(click)).status == 200
    upload, message, record = await delivered_after(rig)
    assert record.request.requester.user_id == "UFAY"
    await press_delete(rig, message, "UWSMOD")  # a member of the workspace's moderator group
    await rig.ephemeral_saying(messages.DELETED)
    assert rig.standin.deleted_files == {file.file_id for file in upload.files}


async def test_a_decision_made_outside_chat_after_a_restart_edits_the_post_in_the_workspaces_channel(
    tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn
) -> None:
    standin.admins.add(ADMIN)
    settings = feature_settings(tmp_path, tiny_model_dir, standin)
    first = await start_rig(settings, standin, admission=await Admission.open(settings, warm_up=False))
    try:
        await command(first, "/imagine-settings", "moderator-channel <#C0REVIEW1>")
        await first.sender.post(first.sender.slash_command("Elmo holding a bloody knife", user_id="UGUS"))
        post = await standin.wait_for(
            lambda: next((m for m in standin.messages.values() if m.channel == "C0REVIEW1"), None)
        )
    finally:
        await first.stop()
    (approve,) = [
        e["action_id"]
        for b in post.blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if "approve" in e["action_id"]
    ]
    second = await start_rig(settings, standin, admission=await Admission.open(settings, warm_up=False))
    try:
        assert second.admission is not None
        await second.admission.review.approve(approve.rsplit(":", 1)[1], "web:moe")  # as the dashboard does
        await second.conversation.process_review_decisions()
        await delivered_after(second)
        assert standin.messages[(post.channel, post.ts)].text.startswith("✅ Approved by web:moe")
        assert not [m for m in standin.messages.values() if m.channel == MODERATOR_CHANNEL]  # not posted anew there
    finally:
        await second.stop()
