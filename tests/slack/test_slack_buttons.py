"""Slack buttons at the wire: upscale, variation, reroll, and cancel while queued or running (requester only)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bots import messages
from engine.requests import JobState
from tests.slack_harness import SlackRig, jpeg_sizes, slack_settings, start_rig
from tests.standins.slack_server import PostedMessage, SlackStandIn
from tests.support import gated_runner

pytestmark = pytest.mark.timeout(300)


def action_ids(message: PostedMessage) -> list[str]:
    return [e["action_id"] for block in message.blocks if block["type"] == "actions" for e in block["elements"]]


async def click(rig: SlackRig, action_id: str, message: PostedMessage, user_id: str = "UALICE") -> None:
    request = rig.sender.button_click(
        action_id, user_id=user_id, channel_id=message.channel, message_ts=message.ts, thread_ts=message.thread_ts
    )
    response = await rig.sender.post(request)
    assert (response.status, response.text) == (200, "")


async def test_upscale_variation_and_reroll_buttons(
    tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn
) -> None:
    rig = await start_rig(slack_settings(tmp_path, tiny_model_dir, standin), standin)
    try:
        await rig.sender.post(rig.sender.slash_command("a red fox", user_id="UALICE"))
        (first,) = await rig.uploads(1)
        status = await rig.message_saying(messages.DONE)
        (buttons,) = [m for m in standin.thread("CGENERAL", status.ts) if m.blocks]
        upscale_2, variation_3, reroll = action_ids(buttons)[1], action_ids(buttons)[6], action_ids(buttons)[8]
        job_id = upscale_2.split(":")[2]
        record = await rig.engine.lookup(job_id)
        assert record is not None

        await click(rig, upscale_2, buttons)
        upscaled = (await rig.uploads(2))[1]
        assert len(upscaled.files) == 1 and upscaled.thread_ts == status.ts
        assert upscaled.files[0].data == await asyncio.to_thread(Path(record.images[1].path).read_bytes)

        await click(rig, variation_3, buttons, user_id="UBOB")
        variation = (await rig.uploads(3))[2]
        assert jpeg_sizes(variation) == [("JPEG", (128, 128))] * 4 and variation.thread_ts == status.ts

        await click(rig, reroll, buttons)
        rerolled = (await rig.uploads(4))[3]
        assert len(rerolled.files) == 4 and rerolled.thread_ts == status.ts

        def image_messages() -> list[PostedMessage]:
            return [
                m
                for m in standin.thread("CGENERAL", status.ts)
                if action_ids(m)[:1] and action_ids(m)[0].startswith("imagine:u:")
            ]

        await standin.wait_for(lambda: len(image_messages()) == 3)
        job_ids = [action_ids(m)[0].split(":")[2] for m in image_messages()]
        assert len(set(job_ids)) == 3 and job_ids[0] == job_id
        records = {j: await rig.engine.lookup(j) for j in job_ids[1:]}
        varied = next(r for r in records.values() if r is not None and r.request.variation is not None)
        rerolled_record = next(r for r in records.values() if r is not None and r.request.variation is None)
        assert varied.request.variation.parent_seed == record.images[2].seed
        assert varied.request.requester.user_id == "UBOB" and varied.request.prompt == "a red fox"
        assert rerolled_record.request.requester.user_id == "UALICE"
        assert rerolled_record.request.prompt == "a red fox" and rerolled_record.seeds != record.seeds
    finally:
        await rig.stop()


async def test_cancel_while_running_and_while_queued_only_by_the_requester(
    tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn
) -> None:
    settings = slack_settings(tmp_path, tiny_model_dir, standin, steps=2)
    runner, gate = await asyncio.to_thread(gated_runner, settings, 1)
    rig = await start_rig(settings, standin, runner_factory=lambda: runner)
    try:
        await rig.sender.post(rig.sender.slash_command("a slow painting", user_id="UALICE", channel_id="CART"))
        await gate.wait_reached()
        await rig.sender.post(rig.sender.slash_command("a waiting painting", user_id="UBOB", channel_id="CART"))
        queued = await rig.message_saying("Queued — position 1")
        running = next(m for m in standin.messages.values() if "a slow painting" in m.text)
        (cancel_running,) = action_ids(running)
        (cancel_queued,) = action_ids(queued)
        assert cancel_running.startswith("imagine:c:") and cancel_queued.startswith("imagine:c:")

        await click(rig, cancel_running, running, user_id="UBOB")
        refusal = await rig.ephemeral_saying(messages.NOT_YOURS_TO_CANCEL)
        assert (refusal.user, refusal.channel) == ("UBOB", "CART")

        await click(rig, cancel_queued, queued, user_id="UBOB")
        await standin.wait_for(lambda: queued.text.startswith(messages.CANCELLED))
        await click(rig, cancel_running, running, user_id="UALICE")
        await standin.wait_for(lambda: running.text.startswith(messages.CANCELLED))
        gate.release()

        for action_id in (cancel_running, cancel_queued):
            record = await rig.engine.lookup(action_id.split(":")[2])
            assert record is not None and record.state is JobState.CANCELLED
        assert standin.completed == [] and action_ids(running) == [] and action_ids(queued) == []
    finally:
        gate.release()
        await rig.stop()


async def test_progress_is_shown_by_editing_the_status_message(
    tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn
) -> None:
    settings = slack_settings(tmp_path, tiny_model_dir, standin, steps=2)
    runner, gate = await asyncio.to_thread(gated_runner, settings, 2)
    rig = await start_rig(settings, standin, runner_factory=lambda: runner)
    try:
        await rig.sender.post(rig.sender.slash_command("a ship at sea"))
        await gate.wait_reached()
        status = await rig.message_saying("Imagining… 50% (step 1/2)")
        gate.release()
        await standin.wait_for(lambda: status.text.startswith(messages.DONE), 120)
        texts = [
            c.args["text"]
            for c in standin.calls
            if c.api in ("chat.postMessage", "chat.update")
            and c.args.get("ts", status.ts) == status.ts
            and "a ship at sea" in c.args["text"]
        ]
        assert texts[0].startswith(("⏳ Queued", "🎨"))
        assert any("50%" in t for t in texts) and texts[-1].startswith(messages.DONE)
        assert len(standin.calls_to("chat.update")) >= 2
    finally:
        gate.release()
        await rig.stop()
