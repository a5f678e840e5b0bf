"""`/imagine` in Slack end to end, at the wire: signed requests into the real slack-bolt app, the real engine and
conversation layer behind it, and the real slack_sdk talking to the stand-in Slack Web API."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots import messages
from engine.requests import JobState
from engine.store import JobStore
from tests.slack_harness import SlackRig, jpeg_sizes, slack_settings, start_rig
from tests.standins.slack_server import SlackStandIn

pytestmark = pytest.mark.timeout(300)


@pytest.mark.timeout(600)
async def test_slash_command_in_a_channel_delivers_four_1280_jpegs_in_one_upload(
    tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn
) -> None:
    rig = await start_rig(slack_settings(tmp_path, tiny_model_dir, standin, base_size=1280), standin)
    try:
        response = await rig.sender.post(rig.sender.slash_command("a lighthouse at dawn", channel_id="CGENERAL"))
        assert (response.status, response.text) == (200, "")

        (upload,) = await rig.uploads(1, within=500)
        await rig.message_saying(messages.DONE)
        assert jpeg_sizes(upload) == [("JPEG", (1280, 1280))] * 4
        status = next(m for m in standin.messages.values() if m.thread_ts is None and m.channel == "CGENERAL")
        assert (upload.channel_id, upload.thread_ts) == ("CGENERAL", status.ts)
        assert "a lighthouse at dawn" in (upload.initial_comment or "")
        assert len(standin.calls_to("files.completeUploadExternal")) == 1
    finally:
        await rig.stop()


async def test_slash_command_in_a_channel_status_progress_images_and_buttons(rig: SlackRig) -> None:
    standin = rig.standin
    await rig.sender.post(rig.sender.slash_command("a red fox --seed 7 --ar 1:1", user_id="UALICE"))

    (upload,) = await rig.uploads()
    done = await rig.message_saying(messages.DONE)
    assert jpeg_sizes(upload) == [("JPEG", (128, 128))] * 4
    # The status message was posted, then edited as the job moved (queued → running → done)...
    assert done.thread_ts is None and done.edits >= 1
    assert standin.calls_to("chat.update")
    # ...the images went into its thread, and the buttons followed them there.
    assert upload.thread_ts == done.ts
    (buttons,) = [m for m in standin.thread("CGENERAL", done.ts) if m.blocks]
    action_ids = [e["action_id"] for b in buttons.blocks if b["type"] == "actions" for e in b["elements"]]
    job_id = action_ids[0].split(":")[2]
    assert action_ids == (
        [f"imagine:u:{job_id}:{i}" for i in range(4)]
        + [f"imagine:v:{job_id}:{i}" for i in range(4)]
        + [f"imagine:r:{job_id}", f"imagine:d:{job_id}"]
    )
    assert "seeds 7–10" in buttons.text
    record = await rig.engine.lookup(job_id)
    assert record is not None and record.state is JobState.DELIVERED
    assert record.request.requester.user_id == "UALICE"


async def test_slash_command_in_a_dm_delivers_in_the_dm(rig: SlackRig) -> None:
    await rig.sender.post(rig.sender.slash_command("a quiet harbour", channel_id="DALICE"))

    (upload,) = await rig.uploads()
    await rig.message_saying(messages.DONE)
    assert (upload.channel_id, upload.thread_ts) == ("DALICE", None)
    assert len(upload.files) == 4


async def test_app_mention_answers_in_the_mentions_thread(rig: SlackRig) -> None:
    request = rig.sender.app_mention("a red fox in the snow", channel_id="CRANDOM")
    mention_ts = request_event(request)["ts"]
    assert (await rig.sender.post(request)).status == 200

    (upload,) = await rig.uploads()
    status = await rig.message_saying(messages.DONE)
    assert status.thread_ts == mention_ts
    assert (upload.channel_id, upload.thread_ts) == ("CRANDOM", mention_ts)
    job = await rig.engine.lookup(job_of(rig))
    assert job is not None and job.request.prompt == "a red fox in the snow"


async def test_direct_message_to_the_app_is_a_prompt(rig: SlackRig) -> None:
    await rig.sender.post(rig.sender.direct_message("a cat made of clouds", channel_id="DBOB", user_id="UBOB"))

    (upload,) = await rig.uploads()
    await rig.message_saying(messages.DONE)
    assert (upload.channel_id, upload.thread_ts, len(upload.files)) == ("DBOB", None, 4)


async def test_bad_options_are_refused_ephemerally_and_start_nothing(rig: SlackRig) -> None:
    response = await rig.sender.post(rig.sender.slash_command("a fox --seed soon"))
    assert response.status == 200
    refusal = await rig.ephemeral_saying("--seed must be a whole number")
    assert refusal.user == "UALICE"
    assert await rig.engine.active() == [] and rig.standin.calls_to("chat.postMessage") == []


def request_event(request: object) -> dict:
    import json

    return json.loads(request.body)["event"]  # type: ignore[attr-defined]


def job_of(rig: SlackRig) -> str:
    """The job id on the buttons of the (only) images message."""
    for message in rig.standin.messages.values():
        for block in message.blocks:
            if block["type"] == "actions":
                return block["elements"][0]["action_id"].split(":")[2]
    raise AssertionError("no buttons posted")


async def test_slash_command_in_a_channel_the_bot_is_not_in_is_answered_through_response_url(rig: SlackRig) -> None:
    """Slack refuses the bot's posts there (not_in_channel), ephemeral ones too: the user is told how to fix
    it through the command's response_url, and no job is left running for images nobody could see."""
    standin = rig.standin
    standin.channels_without_bot.add("CPRIVATE")
    await rig.sender.post(rig.sender.slash_command("a lighthouse at dawn", channel_id="CPRIVATE"))
    (answer,) = await standin.wait_for(lambda: standin.responses or None)
    assert answer["response_type"] == "ephemeral" and "not a member" in answer["text"]
    await rig.settled()
    assert await rig.engine.active() == []
    store = await JobStore.open(rig.settings.store.url)
    try:
        assert [record.state for record in await store.in_states(list(JobState))] == [JobState.CANCELLED]
    finally:
        await store.close()
    assert not [m for m in standin.messages.values() if m.channel == "CPRIVATE"]

    await rig.sender.post(rig.sender.slash_command("a lighthouse at dawn", channel_id="CGENERAL"))
    await rig.message_saying(messages.DONE)  # elsewhere all goes on as usual
