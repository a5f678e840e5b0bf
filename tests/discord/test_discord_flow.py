"""The Discord adapter end to end at the wire level: real discord.py, the real conversation layer and engine (tiny
pipeline), and the stand-in Discord recording every request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import discord
import pytest
import yarl

from bots import messages
from tests.discord_harness import DiscordRig, button_labels, discord_settings, jpeg_sizes, start_rig
from tests.standins.discord_server import DiscordStandIn

pytestmark = pytest.mark.timeout(180)
WEBHOOK = r"/webhooks/\d+/[^/]+"
ORIGINAL = r"/webhooks/\d+/[^/]+/messages/\d+"


@pytest.fixture
async def rig(tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn) -> AsyncIterator[DiscordRig]:
    running = await start_rig(discord_settings(tmp_path, tiny_model_dir, standin), standin)
    yield running
    await running.stop()


async def test_login_syncs_imagine_for_servers_and_dms_and_restores_endpoints(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    library_base = discord.http.Route.BASE
    library_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    rig = await start_rig(discord_settings(tmp_path, tiny_model_dir, standin), standin)
    assert discord.http.Route.BASE == standin.api_base
    assert discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY == yarl.URL(standin.gateway_url)
    await rig.stop()
    assert (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == (
        library_base,
        library_gateway,
    )

    assert [r.path for r in standin.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    (sync,) = standin.requests_to("PUT", rf"/applications/{standin.application_id}/commands")
    command, styles, settings = sync.json
    assert (styles["name"], settings["name"]) == ("imagine-styles", "imagine-settings")
    assert settings["contexts"] == [0] and settings["integration_types"] == [0]  # servers only
    assert command["name"] == "imagine" and command["description"] == messages.DISCORD_IMAGINE_HELP
    assert command["integration_types"] == [0, 1] and command["contexts"] == [0, 1, 2]
    options = {option["name"]: option for option in command["options"]}
    assert list(options) == ["prompt", "negative", "seed", "aspect", "style", "image", "strength"]
    assert options["style"]["autocomplete"] and not options["style"].get("required")
    assert options["prompt"]["required"] and options["prompt"]["description"] == messages.DISCORD_PROMPT_HELP
    assert not options["seed"].get("required") and options["seed"]["type"] == 4
    assert options["seed"]["min_value"] == 0 and options["seed"]["max_value"] == 2**32 - 1
    assert options["aspect"]["description"] == messages.DISCORD_ASPECT_HELP
    identify = next(data for kind, data in standin.gateway_log if kind == "identify")
    assert identify["intents"] == discord.Intents(guilds=True, dm_messages=True).value


@pytest.mark.timeout(600)
async def test_imagine_in_a_guild_delivers_one_message_with_four_1280_jpegs(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    rig = await start_rig(discord_settings(tmp_path, tiny_model_dir, standin, base_size=1280), standin)
    try:
        alice = standin.make_user("alice")
        interaction = await standin.send_command(alice, {"prompt": "a lighthouse at dawn", "seed": 7})
        (images,) = await rig.images_messages(within=540)
        status = await rig.message_saying(messages.DONE)
    finally:
        await rig.stop()

    assert interaction.callback_type == 5  # deferred: "thinking…"
    followups = standin.requests_to("POST", WEBHOOK)
    assert len(followups) == 1 and followups[0].query["wait"] == "1"
    assert jpeg_sizes(images) == [("JPEG", (1280, 1280))] * 4
    assert "a lighthouse at dawn" in images.content and "seeds 7–10" in images.content
    assert button_labels(images) == [["U1", "U2", "U3", "U4"], ["V1", "V2", "V3", "V4"], ["🔄", messages.DELETE_LABEL]]
    assert not images.ephemeral and images.payload["channel_id"] == standin.channel_id
    # the deferred original became the status message: queued, progress, then done without buttons
    assert status.id == interaction.original_message_id and status.custom_ids == []
    edits = [r.json["content"] for r in standin.requests_to("PATCH", ORIGINAL)]
    assert edits[0].startswith("⏳ Queued — position 1") and edits[-1].startswith(messages.DONE)
    assert any(text.startswith("🎨 Imagining…") for text in edits)
    first_edit = standin.requests_to("PATCH", ORIGINAL)[0].json
    assert first_edit["components"][0]["components"][0]["custom_id"].startswith("imagine:c:")


async def test_imagine_in_a_dm_is_answered_in_the_dm(rig: DiscordRig, standin: DiscordStandIn) -> None:
    bob = standin.make_user("bob")
    interaction = await standin.send_command(bob, {"prompt": "a paper boat", "aspect": "16:9"}, in_guild=False)
    (images,) = await rig.images_messages()
    assert images.payload["channel_id"] == standin.dm_channel_id(bob) == interaction.channel_id
    sizes = jpeg_sizes(images)
    assert len(sizes) == 4 and all(width > height for _, (width, height) in sizes)
    record = await rig.engine.lookup(images.custom_ids[0].split(":")[2])
    assert record is not None and record.request.requester.server_id == ""
    assert record.request.requester.user_id == bob.id


async def test_a_plain_dm_text_is_a_prompt(rig: DiscordRig, standin: DiscordStandIn) -> None:
    carol = standin.make_user("carol")
    await standin.send_dm(carol, "  a teapot shaped like a whale ")
    (images,) = await rig.images_messages()
    channel = standin.dm_channel_id(carol)
    assert images.payload["channel_id"] == channel and "a teapot shaped like a whale" in images.content
    posts = standin.requests_to("POST", rf"/channels/{channel}/messages")
    assert posts[0].json["content"].startswith("⏳ Queued")  # the status message, then edited in place
    assert posts[-1].files and posts[-1].json["nonce"] and posts[-1].json["enforce_nonce"] is True
    assert len([p for p in posts if p.files]) == 1
    assert standin.requests_to("PATCH", rf"/channels/{channel}/messages/\d+")


async def test_bad_input_is_refused_privately_and_queues_nothing(rig: DiscordRig, standin: DiscordStandIn) -> None:
    command = await standin.send_command(standin.make_user("dan"), {"prompt": "a cat", "aspect": "50:1"})
    refusal = await rig.message_saying("aspect must be between 1:4 and 4:1")
    assert refusal.ephemeral and standin.messages[str(command.original_message_id)].deleted
    assert rig.engine.pipeline_calls == 0 and standin.messages_with_files() == []


async def test_the_server_allow_list_refuses_other_servers_but_not_dms(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn
) -> None:
    settings = discord_settings(tmp_path, tiny_model_dir, standin)
    settings = replace(settings, discord=replace(settings.discord, guild_ids=[12345]))
    rig = await start_rig(settings, standin)
    try:
        eve = standin.make_user("eve")
        await standin.send_command(eve, {"prompt": "a quiet pond"})
        refusal = await rig.message_saying(messages.DISCORD_SERVER_NOT_ENABLED)
        await standin.send_command(eve, {"prompt": "a quiet pond"}, in_guild=False)
        (images,) = await rig.images_messages()
    finally:
        await rig.stop()
    assert refusal.ephemeral and refusal.payload["channel_id"] == standin.channel_id
    assert images.payload["channel_id"] == standin.dm_channel_id(eve)
