"""Discord buttons at the wire level: U, V, reroll and cancel, routed by custom id through discord.py's dynamic
items to the conversation layer; cancel only by the requester."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bots import messages
from tests.discord_harness import DiscordRig, button_labels, discord_settings, jpeg_sizes, start_rig
from tests.standins.discord_server import DiscordStandIn
from tests.support import gated_runner

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def rig(tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn) -> AsyncIterator[DiscordRig]:
    running = await start_rig(discord_settings(tmp_path, tiny_model_dir, standin, base_size=64), standin)
    yield running
    await running.stop()


def job_of(custom_id: str) -> str:
    return custom_id.split(":")[2]


async def test_upscale_variation_and_reroll(rig: DiscordRig, standin: DiscordStandIn) -> None:
    alice, bob = standin.make_user("alice"), standin.make_user("bob")
    await standin.send_command(alice, {"prompt": "a red kite", "seed": 3})
    (images,) = await rig.images_messages()
    job_id = job_of(images.custom_ids[0])

    upscale = await standin.click(images.id, f"imagine:u:{job_id}:1", bob)
    await rig.images_messages(2)
    single = standin.messages[str(upscale.original_message_id)]
    assert upscale.callback_type == 5  # a new "thinking" message, turned into the single image
    assert len(jpeg_sizes(single)) == 1 and "seed 4" in single.content
    assert button_labels(single) == [["V2", messages.DELETE_LABEL]]

    variation = await standin.click(images.id, f"imagine:v:{job_id}:0", bob)
    reroll = await standin.click(images.id, f"imagine:r:{job_id}", bob)
    await rig.images_messages(4)
    for click in (variation, reroll):  # each new job answers on its own interaction's webhook, once
        (followup,) = [r for r in standin.requests_to("POST", rf"/webhooks/\d+/{click.token}") if r.files]
        assert len(followup.files) == 4
    records = {}
    for message in standin.messages_with_files():
        record = await rig.engine.lookup(job_of(message.custom_ids[0]))
        assert record is not None
        records[record.id] = record
    children = [r for r in records.values() if r.id != job_id]
    assert len(children) == 2 and all(r.request.requester.user_id == bob.id for r in children)
    assert sorted(r.request.variation is not None for r in children) == [False, True]
    assert next(r for r in children if r.request.variation).request.variation.parent_seed == 3  # type: ignore[union-attr]


async def test_cancel_by_the_requester_and_refusal_for_anyone_else(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64, steps=2)
    runner, gate = gated_runner(settings)
    rig = await start_rig(settings, standin, runner_factory=lambda: runner)
    try:
        alice, mallory = standin.make_user("alice"), standin.make_user("mallory")
        command = await standin.send_command(alice, {"prompt": "cancel me"})
        await gate.wait_reached()
        status_id = str(command.original_message_id)
        (cancel,) = await standin.wait_until(lambda: standin.messages[status_id].custom_ids or None)
        assert cancel.startswith("imagine:c:")

        refused = await standin.click(status_id, cancel, mallory)
        notice = await rig.message_saying(messages.NOT_YOURS_TO_CANCEL)
        assert refused.callback_type == 6 and notice.ephemeral  # acknowledged silently, answered privately

        accepted = await standin.click(status_id, cancel, alice)
        await standin.wait_until(lambda: accepted.callback_type == 6)
        gate.release()
        status = await rig.message_saying(messages.CANCELLED)
        assert status.id == status_id and status.custom_ids == []
        job = rig.engine.get(job_of(cancel))
        assert job is not None
        async for _ in job.events():
            pass
    finally:
        gate.release()
        await rig.stop()
    assert standin.messages_with_files() == []
    assert not [m for m in standin.messages.values() if m.ephemeral and m.content != messages.NOT_YOURS_TO_CANCEL]


async def test_a_button_nobody_knows_is_answered_privately(rig: DiscordRig, standin: DiscordStandIn) -> None:
    alice = standin.make_user("alice")
    await standin.send_command(alice, {"prompt": "a small cat"})
    (images,) = await rig.images_messages()
    images.payload["components"][0]["components"][0]["custom_id"] = "imagine:u:0000:0"  # a job that never was
    click = await standin.click(images.id, "imagine:u:0000:0", alice)
    notice = await rig.message_saying(messages.UNKNOWN_JOB)
    assert notice.ephemeral and click.callback_type == 5
    assert standin.messages[str(click.original_message_id)].deleted  # the thinking message made way for it
