"""Start-up order: the Discord adapter stores every prompt before it acknowledges it, from the first event the
gateway delivers, and answers prompts taken while it still starts (the command sync held unanswered)."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bots import messages
from bots.discord.adapter import DiscordAdapter
from bots.intake import Intake
from config.settings import Settings
from storage.urls import sqlite_path
from tests.discord_harness import DiscordRig, discord_settings, start_rig
from tests.standins.discord_server import DiscordStandIn, InteractionRecord, RecordedRequest

pytestmark = pytest.mark.timeout(240)
CALLBACK = r"/interactions/(\d+)/[^/]+/callback"


@dataclass
class IntakeAtFirstAnswer:
    """Looks at the intake table whenever a prompt gets its first answer: a command's interaction callback,
    a DM's first post in its channel. What the database holds at that moment is what survives a crash then."""

    settings: Settings
    dm_channels: set[str] = field(default_factory=set)
    """DM channels where a DM prompt is sent (one each)."""
    seen: dict[str, bool] = field(default_factory=dict)
    """"command <interaction id>" or "dm <channel id>" -> whether its intake row existed at its first answer."""

    def __call__(self, request: RecordedRequest) -> None:
        parts = request.path.split("/")
        if request.method != "POST" or len(parts) not in (4, 5):
            return
        if parts[1] == "interactions":
            self._first(f"command {parts[2]}", "SELECT 1 FROM intake WHERE key = ?", f"discord:{parts[2]}")
        elif parts[1] == "channels" and parts[2] in self.dm_channels:
            self._first(
                f"dm {parts[2]}",
                "SELECT 1 FROM intake WHERE kind = 'dm' AND json_extract(payload_json, '$.context.channel_id') = ?",
                parts[2],
            )

    def _first(self, what: str, query: str, value: str) -> None:
        if what in self.seen:
            return
        with closing(sqlite3.connect(sqlite_path(self.settings.store.url))) as db:
            try:
                self.seen[what] = db.execute(query, (value,)).fetchone() is not None
            except sqlite3.OperationalError:  # no intake table yet: certainly not stored
                self.seen[what] = False


def finished_status(standin: DiscordStandIn, command: InteractionRecord) -> bool:
    status = standin.messages.get(str(command.original_message_id))
    return status is not None and status.content.startswith(messages.DONE)


async def test_prompts_taken_while_the_command_sync_is_unanswered_are_stored_first_and_answered(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)
    observer = IntakeAtFirstAnswer(settings)
    standin.before_request(observer)
    standin.hold_command_sync()
    starting = asyncio.create_task(start_rig(settings, standin))
    rig: DiscordRig | None = None
    try:
        await standin.wait_until(lambda: standin.sync_requests == 1, 120, what="the command sync")
        dora = standin.make_user("dora")
        observer.dm_channels.add(standin.dm_channel_id(dora))
        await standin.send_dm(dora, "a moth")
        commands = [
            await standin.send_command(standin.make_user("early"), {"prompt": "an early bird"}),
            await standin.send_command(standin.make_user("dm"), {"prompt": "a dm bird"}, in_guild=False),
        ]
        # Answered while start() still waits for the sync: handing over does not wait for it.
        await standin.wait_until(lambda: len(standin.messages_with_files()) == 3, 120, what="three images messages")
        await standin.wait_until(lambda: all(finished_status(standin, c) for c in commands), what="statuses done")
        assert not starting.done()
        standin.release_command_sync()
        rig = await starting
        late = await standin.send_command(standin.make_user("late"), {"prompt": "a late owl"})
        await standin.wait_until(lambda: finished_status(standin, late), 120, what="the late command done")
    finally:
        standin.release_command_sync()
        rig = rig or await starting
        await rig.stop()
    assert all(c.callback_type == 5 for c in [*commands, late])
    expected = [*(f"command {c.id}" for c in [*commands, late]), *(f"dm {c}" for c in observer.dm_channels)]
    assert observer.seen == dict.fromkeys(expected, True)
    assert len(standin.messages_with_files()) == 4


async def test_a_command_stored_and_deferred_but_never_handed_over_is_answered_after_the_restart(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after a crash right after the defer: the stored context does not name the thinking message (it is
    stored before the defer), so the restarted bot finds it as the interaction's @original and finishes it."""
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)

    async def never_hand_over(self: Intake) -> None:
        return None

    with monkeypatch.context() as patch:
        patch.setattr(Intake, "resume", never_hand_over)
        first = await start_rig(settings, standin)
        try:
            commands = [
                await standin.send_command(standin.make_user("nell"), {"prompt": "a heron"}),
                await standin.send_command(standin.make_user("otto"), {"prompt": "a crane"}, in_guild=False),
            ]
            await standin.wait_until(lambda: all(c.callback_type == 5 for c in commands), what="the defers")
        finally:
            await first.stop()
    assert standin.messages_with_files() == []
    assert all(standin.messages[str(c.original_message_id)].loading for c in commands)  # still "thinking…"

    second = await start_rig(settings, standin)
    try:
        await second.images_messages(2)
        await standin.wait_until(lambda: all(finished_status(standin, c) for c in commands), what="statuses done")
    finally:
        await second.stop()
    assert len(standin.requests_to("GET", r"/webhooks/\d+/[^/]+/messages/@original")) == 2
    assert len(standin.messages_with_files()) == 2


async def test_a_command_stored_but_never_deferred_is_answered_through_the_channel_after_the_restart(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after a crash between the insert and the defer: Discord has no @original for the interaction, so its
    token cannot send followups; the restarted bot answers with the bot token, in the channel, once."""
    settings = discord_settings(tmp_path, tiny_model_dir, standin, base_size=64)

    async def never_hand_over(self: Intake) -> None:
        return None

    stored = asyncio.Event()

    async def die_before_the_defer(self: DiscordAdapter, interaction: object, *, new_message: bool) -> None:
        stored.set()  # called once the intake has the command

    with monkeypatch.context() as patch:
        patch.setattr(Intake, "resume", never_hand_over)
        patch.setattr(DiscordAdapter, "_acknowledge", die_before_the_defer)
        first = await start_rig(settings, standin)
        try:
            command = await standin.send_command(standin.make_user("pia"), {"prompt": "a stork"})
            await asyncio.wait_for(stored.wait(), 60)
        finally:
            await first.stop()
    assert command.callback_type is None

    second = await start_rig(settings, standin)
    try:
        (images,) = await second.images_messages()
        done = await second.message_saying(messages.DONE)
    finally:
        await second.stop()
    assert images.payload["channel_id"] == done.payload["channel_id"] == standin.channel_id
    assert standin.requests_to("POST", rf"/webhooks/\d+/{command.token}") == []
    assert len(standin.messages_with_files()) == 1
