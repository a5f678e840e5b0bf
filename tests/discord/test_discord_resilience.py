"""The Discord adapter when things go wrong: REST 429 and 500, interaction tokens that expire, gateway reconnects,
a restart in the middle of a job, a bad token. Every image set arrives exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import discord
import pytest

from bots import messages
from bots.conversation import Conversation
from bots.discord.adapter import DiscordAdapter, DiscordStartError
from config.settings import Settings
from engine.local import LocalJobQueue, QueueState
from engine.requests import GenerationRequest, JobState
from engine.store import JobStore
from moderation.admission import Admission, AdmissionDecision
from storage.database import Database
from storage.deliveries import Deliveries as DeliveryLedger
from storage.deliveries import Delivery, DeliveryState
from storage.urls import sqlite_path
from tests.conftest import NetworkGuardError
from tests.discord_harness import DiscordRig, FakeClock, discord_settings, start_rig
from tests.standins.discord_payloads import User
from tests.standins.discord_server import DROP_CONNECTION, DiscordStandIn, InteractionRecord, RecordedRequest
from tests.support import UnetGate, conversation_settled, gated_runner, make_settings

pytestmark = pytest.mark.timeout(240)
WEBHOOK = r"/webhooks/\d+/[^/]+"
UPLOADS = rf"(?:{WEBHOOK}|/channels/\d+/messages)"  # a followup, or a channel post once the token has expired
FIFTEEN_MINUTES_AND_MORE = 16 * 60


@pytest.mark.parametrize("status", [429, 500])
async def test_a_failed_upload_is_retried_and_delivered_once(
    status: int, tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    rig = await start_rig(discord_settings(tmp_path, tiny_model_dir, standin, base_size=64), standin)
    try:
        standin.fail_next("POST", WEBHOOK, status, retry_after=0.05, uploads_only=True)
        await standin.send_command(standin.make_user("alice"), {"prompt": "a windy hill"})
        await rig.message_saying(messages.DONE)
        assert await rig.engine.undelivered("discord") == []
    finally:
        await rig.stop()
    uploads = [r for r in standin.requests_to("POST", WEBHOOK) if r.files]
    assert [r.status for r in uploads] == [status, 200]
    assert len(standin.messages_with_files()) == 1


@pytest.mark.parametrize(
    ("failure", "commit"),
    [(500, True), (DROP_CONNECTION, True), (DROP_CONNECTION, False)],
    ids=["500-after-posting", "dropped-after-posting", "dropped-before-posting"],
)
async def test_a_followup_whose_answer_is_lost_is_posted_once(
    failure: int, commit: bool, tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    """An interaction followup cannot carry a nonce. Discord takes the upload and its answer is lost (a 500, or
    the connection drops): discord.py must not post it again by itself, and the retry looks for the message in
    the channel first, so the images are there once; when the upload did not get through, the retry posts it."""
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    rig = await start_rig(settings, standin)
    try:
        standin.fail_next("POST", WEBHOOK, failure, commit=commit, uploads_only=True)
        await standin.send_command(standin.make_user("alice"), {"prompt": "a windy hill"})
        await rig.message_saying(messages.DONE)
        assert await rig.engine.undelivered("discord") == []
    finally:
        await rig.stop()
    uploads = [r for r in standin.requests_to("POST", WEBHOOK) if r.files]
    assert [r.status for r in uploads] == ([failure] if commit else [failure, 200])
    assert standin.requests_to("GET", rf"/channels/{standin.channel_id}/messages")  # it looked before a retry
    (images,) = standin.messages_with_files()
    assert len(images.files) == 4
    assert await journaled_states(settings) == [JobState.DELIVERED]


@pytest.mark.parametrize("status", [429, 500])
async def test_a_status_edit_that_fails_is_retried_and_the_job_still_ends_once(
    status: int, tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    """Editing the status message meets a 429 or a 500 (edits are idempotent: discord.py retries them): the
    status still ends saying done, and the images are posted once."""
    rig = await start_rig(discord_settings(tmp_path, tiny_model_dir, standin, base_size=64), standin)
    try:
        standin.fail_next("PATCH", rf"{WEBHOOK}/messages/\d+", status, retry_after=0.01)
        command = await standin.send_command(standin.make_user("bea"), {"prompt": "a lighthouse in rain"})
        await rig.message_saying(messages.DONE)
        assert await rig.engine.undelivered("discord") == []
    finally:
        await rig.stop()
    edits = standin.requests_to("PATCH", rf"{WEBHOOK}/messages/\d+")
    assert [r.status for r in edits[:2]] == [status, 200] and all(r.status == 200 for r in edits[1:])
    assert standin.messages[str(command.original_message_id)].content.startswith(messages.DONE)
    assert len(standin.messages_with_files()) == 1


async def test_images_that_could_not_be_posted_follow_without_a_restart(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    """Discord refuses every upload for a while (longer than the follower's retries): the status says the
    images will follow, and the next redelivery sweep posts them, once."""
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    rig = await start_rig(settings, standin, redelivery_interval_s=0.2)
    try:
        standin.fail_next("POST", UPLOADS, 429, times=15, retry_after=0.01, uploads_only=True)
        await standin.send_command(standin.make_user("erin"), {"prompt": "a quiet harbour"})
        await rig.message_saying("will follow")
        await rig.message_saying(messages.DONE)
        assert await rig.engine.undelivered("discord") == []
    finally:
        await rig.stop()
    refused = [r for r in standin.requests_to("POST", UPLOADS) if r.files and r.status == 429]
    assert len(refused) == 15
    assert len(standin.messages_with_files()) == 1


async def test_a_lost_response_on_a_channel_upload_does_not_post_twice(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    """The upload reaches Discord but the answer is a 500: the retry carries the same nonce (enforce_nonce), and
    Discord answers it with the first message instead of posting a second one."""
    rig = await start_rig(discord_settings(tmp_path, tiny_model_dir, standin, base_size=64), standin)
    try:
        dave = standin.make_user("dave")
        channel = standin.dm_channel_id(dave)
        standin.fail_next("POST", rf"/channels/{channel}/messages", 500, commit=True, uploads_only=True)
        await standin.send_dm(dave, "a lantern in fog")
        await rig.message_saying(messages.DONE)
    finally:
        await rig.stop()
    uploads = [r for r in standin.requests_to("POST", rf"/channels/{channel}/messages") if r.files]
    assert [r.status for r in uploads] == [500, 200]
    assert uploads[0].json["nonce"] == uploads[1].json["nonce"]
    assert len(standin.messages_with_files()) == 1


@pytest.mark.parametrize("clock_knows", [True, False], ids=["token-aged", "token-rejected"])
async def test_a_job_that_outlives_its_interaction_token_is_delivered_with_the_bot_token(
    clock_knows: bool, tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    runner, gate = gated_runner(settings)
    clock = FakeClock()
    rig = await start_rig(settings, standin, runner_factory=lambda: runner, clock=clock)
    try:
        command = await standin.send_command(standin.make_user("erin"), {"prompt": "a slow sunset"})
        await gate.wait_reached()
        standin.expire_interaction_tokens()
        if clock_knows:
            clock.advance(FIFTEEN_MINUTES_AND_MORE)
        gate.release()
        (images,) = await rig.images_messages()
        await rig.message_saying(messages.DONE)
        assert await rig.engine.undelivered("discord") == []
    finally:
        gate.release()
        await rig.stop()
    channel = standin.channel_id
    (upload,) = [r for r in standin.requests_to("POST", rf"/channels/{channel}/messages") if r.files]
    assert upload.headers["Authorization"] == f"Bot {standin.token}" and upload.json["enforce_nonce"]
    assert images.payload["channel_id"] == channel and len(images.files) == 4
    late_edits = standin.requests_to("PATCH", rf"/channels/{channel}/messages/{command.original_message_id}")
    assert late_edits and late_edits[-1].json["content"].startswith(messages.DONE)
    assert all(r.status == 401 for r in standin.requests_to("POST", WEBHOOK))


async def start_locked_out(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn, **settings_changes: Any
) -> tuple[DiscordRig, UnetGate, User]:
    """A guild command whose job outlives its interaction token, while the bot loses access to the channel
    (403 50001 Missing Access: no retry mends it). The job is held in its first UNet call: release the gate."""
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    settings = replace(settings, service=replace(settings.service, **settings_changes))
    runner, gate = gated_runner(settings)
    clock = FakeClock()
    rig = await start_rig(settings, standin, runner_factory=lambda: runner, clock=clock, redelivery_interval_s=0.2)
    erin = standin.make_user("erin")
    await standin.send_command(erin, {"prompt": "a locked room"})
    await gate.wait_reached()
    standin.expire_interaction_tokens()
    clock.advance(FIFTEEN_MINUTES_AND_MORE)
    standin.forbidden_channel_ids.add(standin.channel_id)
    return rig, gate, erin


async def test_images_for_a_channel_closed_to_the_bot_go_to_the_requester_by_dm_once(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    rig, gate, erin = await start_locked_out(tmp_path, tiny_model_dir, standin)
    try:
        gate.release()
        (images,) = await rig.images_messages(channel_id=standin.dm_channel_id(erin))
        await conversation_settled(rig.conversation)
        assert await rig.engine.undelivered("discord") == []
    finally:
        gate.release()
        await rig.stop()
    refused = [r for r in standin.requests_to("POST", rf"/channels/{standin.channel_id}/messages") if r.files]
    assert [r.status for r in refused] == [403]  # tried once: a 403 is not retried
    assert len(images.files) == 4 and standin.messages_with_files() == [images]


async def test_a_delivery_nowhere_to_go_is_given_up_with_its_reason_and_the_queue_goes_on(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    """The channel is closed to the bot and the requester takes no DMs either (403 50007): after
    service.delivery_give_up_s (here at once) the sweep stops, the delivery is failed with the reason, the
    requester is told where that is still tried (a DM, refused too), and the next user's job is delivered."""
    rig, gate, erin = await start_locked_out(tmp_path, tiny_model_dir, standin, delivery_give_up_s=1e-6)
    dm = standin.dm_channel_id(erin)
    standin.closed_dm_user_ids.add(erin.id)
    try:
        frank = standin.make_user("frank")
        await standin.send_command(frank, {"prompt": "an open window"}, channel_id=standin.other_channel_id)
        gate.release()
        give_up_note = messages.delivery_given_up("a locked room")
        await standin.wait_until(
            lambda: any(r.json and r.json.get("content") == give_up_note for r in posts_to(standin, dm)),
            what="the note that the images were given up",
        )
        (delivered,) = await rig.images_messages(channel_id=standin.other_channel_id)
        await conversation_settled(rig.conversation)
    finally:
        gate.release()
        await rig.stop()
    assert len(delivered.files) == 4 and standin.messages_with_files() == [delivered]  # frank's, not blocked
    assert {r.status for r in posts_to(standin, dm)} == {403}
    failed = await delivery_of(rig.settings, erin)
    assert failed.state is DeliveryState.FAILED and failed.last_error is not None
    assert "50007" in failed.last_error and "Cannot send messages to this user" in failed.last_error
    database = await Database.open(rig.settings.store.url)
    try:
        assert await DeliveryLedger(database).due("discord") == []  # never offered again
    finally:
        await database.close()


def posts_to(standin: DiscordStandIn, channel_id: str) -> list[RecordedRequest]:
    return standin.requests_to("POST", rf"/channels/{channel_id}/messages")


async def delivery_of(settings: Settings, user: User) -> Delivery:
    store = await JobStore.open(settings.store.url)
    try:
        (job,) = [r for r in await store.in_states(list(JobState)) if r.request.requester.user_id == user.id]
    finally:
        await store.close()
    database = await Database.open(settings.store.url)
    try:
        delivery = await DeliveryLedger(database).get(job.id)
    finally:
        await database.close()
    assert delivery is not None
    return delivery


async def test_a_gateway_reconnect_mid_job_resumes_and_loses_nothing(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    runner, gate = gated_runner(settings)
    rig = await start_rig(settings, standin, runner_factory=lambda: runner)
    try:
        await standin.send_command(standin.make_user("frank"), {"prompt": "before the drop"})
        await gate.wait_reached()
        await standin.gateway.drop_connection()
        during = await standin.send_command(standin.make_user("grace"), {"prompt": "sent during the drop"})
        await standin.wait_until(lambda: standin.resume_count == 1, what="a RESUME")
        await standin.gateway.request_reconnect()  # and once more, asked by the server (op 7)
        await standin.wait_until(lambda: standin.resume_count == 2, what="a second RESUME")
        gate.release()
        await rig.images_messages(2)
        await standin.wait_until(
            lambda: sum(m.content.startswith(messages.DONE) for m in standin.messages.values()) == 2
        )
    finally:
        gate.release()
        await rig.stop()
    assert during.callback_type == 5  # replayed on RESUME and acknowledged in time
    assert standin.identify_count == 1
    assert len(standin.messages_with_files()) == 2


async def test_a_restart_mid_job_delivers_every_acknowledged_command_exactly_once(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    runner, gate = gated_runner(settings)
    first = await start_rig(settings, standin, runner_factory=lambda: runner)
    running = await standin.send_command(standin.make_user("heidi"), {"prompt": "running at the restart"})
    await gate.wait_reached()
    queued = await standin.send_command(standin.make_user("ivan"), {"prompt": "queued at the restart"}, in_guild=False)
    await standin.wait_until(lambda: queued.callback_type == 5 and len(first.engine.active_jobs()) == 2)
    await first.adapter.close()
    await first.conversation.close()
    stopping = asyncio.create_task(first.engine.shutdown(drain=False))
    gate.release()
    await stopping
    await first.stop()  # what is left: admission and the database
    assert standin.messages_with_files() == []

    second = await start_rig(settings, standin)
    try:
        await second.images_messages(2)
        await standin.wait_until(
            lambda: sum(m.content.startswith(messages.DONE) for m in standin.messages.values()) == 2
        )
        assert await second.engine.undelivered("discord") == []
    finally:
        await second.stop()
    for command in (running, queued):  # each answered on its own interaction, its status message finished
        uploads = [r for r in standin.requests_to("POST", rf"/webhooks/\d+/{command.token}") if r.files]
        assert len(uploads) == 1
        assert standin.messages[str(command.original_message_id)].content.startswith(messages.DONE)
    assert standin.identify_count == 2

    third = await start_rig(settings, standin)  # nothing left to do
    await third.stop()
    assert len(standin.messages_with_files()) == 2


async def test_a_command_acknowledged_just_before_a_crash_is_delivered_once_after_the_restart(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command is deferred (the user sees "thinking") and the service stops while admission still screens
    it, so no job was journaled: the durable intake hands it over again after the restart."""
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    settings = replace(settings, moderation=replace(settings.moderation, embedding=False))
    in_admission, admission_may_go_on = asyncio.Event(), asyncio.Event()
    real_check = Admission.check

    async def held_check(self: Admission, request: GenerationRequest, **options: Any) -> AdmissionDecision:
        in_admission.set()
        await admission_may_go_on.wait()
        return await real_check(self, request, **options)

    monkeypatch.setattr(Admission, "check", held_check)
    first = await start_rig(settings, standin, moderated=True)
    try:
        command = await standin.send_command(standin.make_user("judy"), {"prompt": "a kite over the dunes"})
        await asyncio.wait_for(in_admission.wait(), 60)
        await standin.wait_until(lambda: command.callback_type == 5, what="the deferral")
    finally:
        await first.stop()
    assert await journaled_states(settings) == [] and standin.messages_with_files() == []

    admission_may_go_on.set()
    second = await start_rig(settings, standin, moderated=True)
    try:
        await second.images_messages()
        await standin.wait_until(lambda: finished_status(standin, command), what="the status message done")
        assert await second.engine.undelivered("discord") == []
    finally:
        await second.stop()
    third = await start_rig(settings, standin, moderated=True)  # nothing left to do
    await third.stop()
    assert uploads_on(standin, command) == 1 and len(standin.messages_with_files()) == 1
    assert await journaled_states(settings) == [JobState.DELIVERED]


async def test_a_replayed_command_that_already_became_a_job_is_not_submitted_again(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    runner, gate = gated_runner(settings)
    first = await start_rig(settings, standin, runner_factory=lambda: runner)
    command = await standin.send_command(standin.make_user("ken"), {"prompt": "an owl journaled once"})
    await gate.wait_reached()
    await first.adapter.close()
    await first.conversation.close()
    stopping = asyncio.create_task(first.engine.shutdown(drain=False))
    await asyncio.sleep(0)  # one turn of the loop: shutdown hands the job back before its first await
    assert first.engine.state is QueueState.STOPPING
    gate.release()
    await stopping
    await first.stop()  # what is left: admission and the database
    # As if the crash came after the job was journaled but before the intake noted the command as handled.
    await asyncio.to_thread(_forget_handled, settings)

    second = await start_rig(settings, standin)
    try:
        await second.images_messages()
        await standin.wait_until(lambda: finished_status(standin, command), what="the status message done")
        assert await second.engine.undelivered("discord") == []
    finally:
        await second.stop()
    assert uploads_on(standin, command) == 1 and len(standin.messages_with_files()) == 1
    assert await journaled_states(settings) == [JobState.DELIVERED]


def uploads_on(standin: DiscordStandIn, command: InteractionRecord) -> int:
    return len([r for r in standin.requests_to("POST", rf"/webhooks/\d+/{command.token}") if r.files])


def finished_status(standin: DiscordStandIn, command: InteractionRecord) -> bool:
    status = standin.messages.get(str(command.original_message_id))
    return status is not None and status.content.startswith(messages.DONE)


async def journaled_states(settings: Settings) -> list[JobState]:
    store = await JobStore.open(settings.store.url)
    try:
        return [record.state for record in await store.in_states(list(JobState))]
    finally:
        await store.close()


def _forget_handled(settings: Settings) -> None:
    with closing(sqlite3.connect(sqlite_path(settings.store.url))) as db:
        assert db.execute("UPDATE intake SET done_at = NULL WHERE platform = 'discord'").rowcount == 1
        db.commit()


async def test_a_bad_token_is_a_clear_start_error(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    settings = discord_settings(tmp_path, tiny_model_dir, standin)
    settings = replace(settings, discord=replace(settings.discord, token="not-the-token"))
    library_base = discord.http.Route.BASE
    engine = LocalJobQueue(settings)
    conversation = Conversation(settings, engine, database=Database(settings.store.url))
    adapter = DiscordAdapter(settings, conversation)
    with pytest.raises(DiscordStartError) as raised:
        await adapter.start()
    message = str(raised.value)
    assert "IMAGINE_DISCORD__TOKEN" in message and "401" in message and "not-the-token" not in message
    assert discord.http.Route.BASE == library_base
    assert standin.gateway_log == []  # it never got as far as the gateway


async def test_the_default_api_base_is_discord_com_and_the_loopback_guard_stops_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Proof that discord.api_base drives discord.py: left at its default, the adapter reaches for discord.com."""
    settings = make_settings(tmp_path, tiny_model_dir)
    settings = replace(settings, discord=replace(settings.discord, token="a-token"))
    library_base = discord.http.Route.BASE
    adapter = DiscordAdapter(
        settings, Conversation(settings, LocalJobQueue(settings), database=Database(settings.store.url))
    )
    with pytest.raises(NetworkGuardError, match="discord.com"):
        await adapter.start()
    assert discord.http.Route.BASE == library_base
