"""Slack failing and the service restarting: images are still delivered, and exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from bots import messages
from bots.intake import Intake
from bots.slack.posting import RETRY_DELAYS_S
from config.settings import Settings
from engine.local import QueueState
from engine.requests import JobState
from engine.store import JobStore
from storage.database import Database
from storage.deliveries import Deliveries as DeliveryLedger
from storage.deliveries import Delivery, DeliveryState
from storage.urls import sqlite_path
from tests.slack_harness import SlackRig, slack_settings, start_rig
from tests.standins.slack_requests import slash_command_payload
from tests.standins.slack_server import SlackStandIn
from tests.support import UnetGate, conversation_settled, gated_runner

pytestmark = pytest.mark.timeout(300)
TRIES_OF_A_FOLLOWER = (len(RETRY_DELAYS_S) + 1) * 3
"""Each post is tried 1 + len(RETRY_DELAYS_S) times, in each of the follower's three deliveries (tests/support)."""


def image_messages(standin: SlackStandIn) -> list[str]:
    """Job ids of the buttons messages that follow each delivery."""
    return [
        b["elements"][0]["action_id"].split(":")[2]
        for m in standin.messages.values()
        for b in m.blocks
        if b["type"] == "actions" and b["elements"][0]["action_id"].startswith("imagine:u:")
    ]


async def test_rate_limited_and_failing_uploads_are_retried_and_delivered_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with SlackStandIn() as standin:
        rig = await start_rig(slack_settings(tmp_path, tiny_model_dir, standin), standin)
        try:
            standin.fail("upload", 429, retry_after=0)
            standin.fail("files.completeUploadExternal", 429, retry_after=1)
            standin.fail("files.completeUploadExternal", 500)  # retried (bots/slack/posting.py) once it looked
            await rig.sender.post(rig.sender.slash_command("a patient fox"))

            await rig.message_saying(messages.DONE)
            statuses = [c.status for c in standin.calls_to("files.completeUploadExternal")]
            assert statuses == [429, 500, 200]
            assert [c.status for c in standin.calls_to("upload")].count(429) == 1
            assert len(standin.completed) == 1 and len(standin.completed[0].files) == 4
            assert len(image_messages(standin)) == 1
        finally:
            await rig.stop()


async def test_status_edits_that_meet_server_errors_are_retried_and_the_status_ends_done(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """chat.update (an edit: repeating it changes nothing) answered 500 then 503: slack_sdk retries it with
    backoff, so the status message still ends saying done; the images are posted once."""
    async with SlackStandIn() as standin:
        rig = await start_rig(slack_settings(tmp_path, tiny_model_dir, standin), standin)
        try:
            standin.fail("chat.update", 500)
            standin.fail("chat.update", 503)
            await rig.sender.post(rig.sender.slash_command("a patient heron"))
            done = await rig.message_saying(messages.DONE)
            await conversation_settled(rig.conversation)
        finally:
            await rig.stop()
        edits = standin.calls_to("chat.update")
        assert [c.status for c in edits[:3]] == [500, 503, 200] and all(c.status == 200 for c in edits[2:])
        assert edits[0].args["text"] == edits[1].args["text"] == edits[2].args["text"]  # one edit, tried thrice
        assert done.edits >= 1 and done.ts == standin.calls_to("chat.update")[-1].args["ts"]  # the status message
        assert len(standin.completed) == 1 and len(image_messages(standin)) == 1


async def test_when_only_the_buttons_failed_a_later_sweep_does_not_post_the_images_again(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin, steps=2)
        runner, gate = await asyncio.to_thread(gated_runner, settings, 1)
        rig = await start_rig(settings, standin, runner_factory=lambda: runner, redelivery_interval_s=0.2)
        try:
            await rig.sender.post(rig.sender.slash_command("a stubborn heron"))
            await gate.wait_reached()  # the status message is posted; the images are not made yet
            # The buttons message: four tries in each of the follower's three (bots/slack/posting.py retries too).
            standin.fail("chat.postMessage", 500, times=TRIES_OF_A_FOLLOWER)
            gate.release()
            await rig.message_saying("will follow")
            await standin.wait_for(lambda: len(image_messages(standin)) == 1)
            await rig.message_saying(messages.DONE)
            await conversation_settled(rig.conversation)
        finally:
            await rig.stop()
        assert len(standin.completed) == 1  # the images went up once
        assert [c.status for c in standin.calls_to("chat.postMessage")].count(500) == TRIES_OF_A_FOLLOWER


async def test_restart_mid_job_and_before_delivery_delivers_each_job_exactly_once(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin, steps=2)
        runner, gate = await asyncio.to_thread(gated_runner, settings, 3)
        rig = await start_rig(settings, standin, runner_factory=lambda: runner)
        # Job 1 finishes, but Slack refuses every delivery attempt: it stays done-but-undelivered.
        standin.fail("files.completeUploadExternal", 500, times=TRIES_OF_A_FOLLOWER)
        await rig.sender.post(rig.sender.slash_command("a finished but undelivered fox", channel_id="CONE"))
        await standin.wait_for(lambda: len(standin.calls_to("files.completeUploadExternal")) == TRIES_OF_A_FOLLOWER)
        # Job 2 is mid-generation (held in its first UNet call, the 3rd overall) when the service stops.
        await rig.sender.post(rig.sender.slash_command("an interrupted owl", channel_id="CTWO"))
        await gate.wait_reached()
        await stop_mid_job(rig, gate)
        assert standin.completed == []
        assert await journaled_states(settings) == {"CONE": JobState.DONE, "CTWO": JobState.QUEUED}

        again = await start_rig(settings, standin)
        try:
            await standin.wait_for(lambda: len(image_messages(standin)) == 2, 120)
            await settled(again)
            by_channel = sorted((u.channel_id, len(u.files)) for u in standin.completed)
            assert by_channel == [("CONE", 4), ("CTWO", 4)]
        finally:
            await again.stop()
        assert await journaled_states(settings) == {"CONE": JobState.DELIVERED, "CTWO": JobState.DELIVERED}
        assert len(standin.completed) == 2


async def stop_mid_job(rig: SlackRig, gate: UnetGate) -> None:
    """`rig.stop()`, with the pipeline held inside a job until the engine has handed that job back."""
    await rig.sender.__aexit__(None, None, None)
    await rig.adapter.close()
    await rig.conversation.close()
    stopping = asyncio.create_task(rig.engine.shutdown(drain=False))
    await asyncio.sleep(0)  # one turn of the loop: shutdown hands jobs back before its first await
    assert rig.engine.state is QueueState.STOPPING
    gate.release()
    await stopping
    assert rig.service is not None
    await rig.service.close()  # what is left: admission and the database


async def settled(rig: SlackRig) -> None:
    await conversation_settled(rig.conversation)


async def journaled_states(settings: Settings) -> dict[str, JobState]:
    store = await JobStore.open(settings.store.url)
    try:
        return {r.request.requester.channel_id: r.state for r in await store.in_states(list(JobState))}
    finally:
        await store.close()


@pytest.mark.parametrize("slow_start", [False, True], ids=["quick start", "slow start"])
async def test_a_request_acknowledged_just_before_a_crash_is_handled_after_the_restart(
    tmp_path: Path, tiny_model_dir: Path, slow_start: bool
) -> None:
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin)
        # The process stored the command and acked it; it died before the command reached the engine.
        never = asyncio.Event()
        database = await Database.open(settings.store.url)
        dying = Intake(database, "slack", lambda entry: never.wait())
        await dying.open()
        await dying.resume()
        command = slash_command_payload("a fox that survived a crash", channel_id="CCRASH")
        assert await dying.receive(f"command:{command['trigger_id']}", "command", command)
        await dying.close()
        await database.close()

        # Slow start: the replayed command is a job before conversation.start() looks for jobs to follow.
        rig = await start_rig(settings, standin, slow_start=slow_start)
        try:
            (upload,) = await rig.uploads(1)
            await rig.message_saying(messages.DONE)
            assert (upload.channel_id, len(upload.files)) == ("CCRASH", 4)
            # Slack retrying the same command now changes nothing: the key is remembered across the restart.
            retry = rig.sender.slash_command(
                "a fox that survived a crash", trigger_id=command["trigger_id"], channel_id="CCRASH"
            )
            assert (await rig.sender.post(retry)).status == 200
            await rig.settled()
        finally:
            await rig.stop()
        assert len(standin.completed) == 1
        assert await journaled_states(settings) == {"CCRASH": JobState.DELIVERED}


async def test_a_request_that_became_a_job_just_before_a_crash_is_not_submitted_again(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin, steps=2)
        runner, gate = await asyncio.to_thread(gated_runner, settings, 1)
        rig = await start_rig(settings, standin, runner_factory=lambda: runner)
        await rig.sender.post(rig.sender.slash_command("an owl journaled once", channel_id="CONCE"))
        await rig.settled()
        await gate.wait_reached()
        await stop_mid_job(rig, gate)
        # As if the crash came after the job was journaled but before the intake noted the request as handled.
        await asyncio.to_thread(_forget_handled, settings)

        again = await start_rig(settings, standin)
        try:
            await again.uploads(1)
            await again.message_saying(messages.DONE)
            await again.settled()
            await settled(again)
        finally:
            await again.stop()
        assert len(standin.completed) == 1
        assert await journaled_states(settings) == {"CONCE": JobState.DELIVERED}


def _forget_handled(settings: Settings) -> None:
    with closing(sqlite3.connect(sqlite_path(settings.store.url))) as db:
        assert db.execute("UPDATE intake SET done_at = NULL").rowcount == 1
        db.commit()


async def test_a_request_acknowledged_while_the_service_stops_is_handled_after_the_restart(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin)
        rig = await start_rig(settings, standin)
        await rig.engine.shutdown(drain=True)  # `imagine serve` drains the engine before closing the adapters
        response = await rig.sender.post(rig.sender.slash_command("a fox at closing time", channel_id="CLATE"))
        assert response.status == 200
        await rig.settled()
        await rig.stop()
        # Not refused: kept for the next start, and the user told so.
        assert [e.text for e in standin.ephemerals] == [messages.SAVED_FOR_RESTART] and standin.messages == {}

        again = await start_rig(settings, standin)
        try:
            (upload,) = await again.uploads(1)
            await again.message_saying(messages.DONE)
        finally:
            await again.stop()
        assert (upload.channel_id, len(standin.completed)) == ("CLATE", 1)


CLOSINGS: dict[str, Callable[[SlackStandIn, str], None]] = {
    "bot removed (not_in_channel)": lambda standin, channel: standin.channels_without_bot.add(channel),
    "channel archived (is_archived)": lambda standin, channel: standin.archived_channels.add(channel),
    "channel deleted (channel_not_found)": lambda standin, channel: standin.deleted_channels.add(channel),
}


@pytest.mark.parametrize("how", list(CLOSINGS))
async def test_a_result_never_postable_is_given_up_and_its_requester_told_by_dm(
    how: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The channel closes to the bot for good while the job runs: every post there fails, so after
    service.delivery_give_up_s (here at once) the sweep gives up, the delivery is failed with Slack's reason, and
    the requester is told in a DM. The next job in the queue is delivered all the same."""
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin, steps=2)
        settings = replace(settings, service=replace(settings.service, delivery_give_up_s=1e-6))
        runner, gate = await asyncio.to_thread(gated_runner, settings, 1)
        rig = await start_rig(settings, standin, runner_factory=lambda: runner, redelivery_interval_s=0.2)
        try:
            await rig.sender.post(rig.sender.slash_command("a lost kite", channel_id="CGONE", user_id="UKIM"))
            await gate.wait_reached()  # the status message is up; the images are not made yet
            CLOSINGS[how](standin, "CGONE")
            await rig.sender.post(rig.sender.slash_command("a found kite", channel_id="COPEN", user_id="ULEO"))
            gate.release()
            told = await rig.message_saying("I couldn't post your images")
            (delivered,) = await rig.uploads(1)
            await rig.conversation.settled()
            (failed,) = [d for d in await deliveries(settings) if d.state is DeliveryState.FAILED]
        finally:
            gate.release()
            await rig.stop()
        assert told.channel == "UKIM"  # a direct message to the requester
        assert told.text.count("a lost kite") == 1
        assert delivered.channel_id == "COPEN"  # the queue went on
        error = how.split("(")[1].rstrip(")")
        assert failed.last_error is not None and error in failed.last_error


async def deliveries(settings: Settings) -> list[Delivery]:
    database = await Database.open(settings.store.url)
    try:
        ledger = DeliveryLedger(database)
        store = await JobStore.open(settings.store.url)
        try:
            ids = [record.id for record in await store.in_states(list(JobState))]
        finally:
            await store.close()
        return [d for d in [await ledger.get(job_id) for job_id in ids] if d is not None]
    finally:
        await database.close()
