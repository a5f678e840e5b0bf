"""The stand-in Discord speaks the real protocol: a plain discord.py client logs in, syncs, answers and resumes
against it. (The adapter's tests rely on these behaviours.)"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import discord
import pytest
import yarl
from discord import app_commands

from tests.standins.discord_server import DiscordStandIn

pytestmark = pytest.mark.timeout(60)


class _Probe:
    """A bare discord.py client whose /imagine defers, edits the original, then sends a followup with a file."""

    def __init__(self) -> None:
        self.client = discord.Client(intents=discord.Intents(guilds=True, dm_messages=True), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self.client)
        self.prompts: asyncio.Queue[str] = asyncio.Queue()
        self.dms: asyncio.Queue[str] = asyncio.Queue()
        self.edit_before_followup = True

        @self.tree.command(name="imagine", description="Make four images")
        @app_commands.allowed_installs(guilds=True, users=True)
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=True)
        async def imagine(interaction: discord.Interaction, prompt: str) -> None:
            await interaction.response.defer()
            if self.edit_before_followup:
                await interaction.edit_original_response(content="working")
            image = discord.File(io.BytesIO(b"\xff\xd8jpeg"), filename="0.jpg")
            await interaction.followup.send(prompt, file=image, ephemeral=True, wait=True)
            await self.prompts.put(prompt)

        @self.client.event
        async def on_message(message: discord.Message) -> None:
            await self.dms.put(message.content)


@pytest.fixture
async def standin(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DiscordStandIn]:
    async with DiscordStandIn() as server:
        monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url))
        yield server


@pytest.fixture
async def probe(standin: DiscordStandIn) -> AsyncIterator[_Probe]:
    probe = _Probe()
    await probe.client.login(standin.token)
    connection = asyncio.create_task(probe.client.connect())
    await probe.client.wait_until_ready()
    yield probe
    await probe.client.close()
    await connection


async def test_login_identify_ready_and_command_sync(standin: DiscordStandIn, probe: _Probe) -> None:
    assert [r.path for r in standin.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert standin.gateway_log[0][1]["query"]["compress"] == "zlib-stream"
    assert probe.client.user is not None and str(probe.client.user.id) == standin.bot.id
    assert [str(g.id) for g in probe.client.guilds] == [standin.guild.id]

    await probe.tree.sync()
    (sync,) = standin.requests_to("PUT", rf"/applications/{standin.application_id}/commands")
    (command,) = sync.json
    assert command["name"] == "imagine" and command["contexts"] == [0, 1, 2]
    assert command["integration_types"] == [0, 1]
    assert standin.synced_commands[0]["id"]


async def test_bad_token_is_refused_at_login(standin: DiscordStandIn) -> None:
    client = discord.Client(intents=discord.Intents(guilds=True))
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    assert standin.requests[-1].status == 401


async def test_command_in_guild_defer_edit_and_multipart_followup(standin: DiscordStandIn, probe: _Probe) -> None:
    await probe.tree.sync()
    alice = standin.make_user("alice")
    record = await standin.send_command(alice, {"prompt": "a lighthouse"})
    assert await asyncio.wait_for(probe.prompts.get(), 10) == "a lighthouse"

    assert record.callback_type == 5 and record.ack_latency_s is not None
    (followup,) = standin.requests_to("POST", rf"/webhooks/{standin.application_id}/{record.token}")
    assert followup.query["wait"] == "1"
    assert followup.files[0].data == b"\xff\xd8jpeg" and followup.files[0].filename == "0.jpg"
    (message,) = standin.messages_with_files(standin.channel_id)
    assert message.content == "a lighthouse" and message.ephemeral  # the original was resolved first


async def test_first_followup_after_defer_replaces_the_thinking_message(standin: DiscordStandIn, probe: _Probe) -> None:
    probe.edit_before_followup = False
    record = await standin.send_command(standin.make_user("bob"), {"prompt": "x"}, in_guild=False)
    await asyncio.wait_for(probe.prompts.get(), 10)
    original = standin.messages[str(record.original_message_id)]
    assert original.files and not original.ephemeral and not original.loading  # the ephemeral flag was ignored


async def test_reconnect_and_resume_replays_missed_events(standin: DiscordStandIn, probe: _Probe) -> None:
    carol = standin.make_user("carol")
    await standin.gateway.request_reconnect()
    await standin.send_dm(carol, "sent while reconnecting")
    assert await asyncio.wait_for(probe.dms.get(), 10) == "sent while reconnecting"
    await standin.wait_until(lambda: standin.resume_count == 1, what="RESUME after op 7")

    await standin.gateway.drop_connection()
    await standin.send_dm(carol, "sent while dropped")
    assert await asyncio.wait_for(probe.dms.get(), 10) == "sent while dropped"
    await standin.wait_until(lambda: standin.resume_count == 2, what="RESUME after a dropped socket")
    assert standin.identify_count == 1
    assert [entry for kind, entry in standin.gateway_log if kind == "resumed"][-1]["path"] == "/resume"


async def test_rate_limit_429_is_retried_by_the_library(standin: DiscordStandIn, probe: _Probe) -> None:
    standin.fail_next("POST", r"/webhooks/\d+/[^/]+", 429, retry_after=0.01)
    await standin.send_command(standin.make_user("dave"), {"prompt": "y"})
    await asyncio.wait_for(probe.prompts.get(), 10)
    statuses = [r.status for r in standin.requests_to("POST", r"/webhooks/\d+/[^/]+")]
    assert statuses == [429, 200]
    assert len(standin.messages_with_files()) == 1


async def test_channel_nonce_is_idempotent_after_a_lost_response(standin: DiscordStandIn, probe: _Probe) -> None:
    standin.fail_next("POST", rf"/channels/{standin.channel_id}/messages", 500, commit=True)
    channel = probe.client.get_channel(int(standin.channel_id))
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("once", nonce="job-1")  # discord.py adds enforce_nonce; it retries the 500
    assert [m.id for m in standin.channel_messages(standin.channel_id)] == [str(message.id)]
