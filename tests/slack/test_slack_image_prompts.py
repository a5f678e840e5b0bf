"""Image prompts in Slack at the wire level: signed events into the real slack-bolt app with a file shared, the
file fetched from the stand-in file host with the bot token as a Bearer (and only from there), checked before any
GPU time, and generated from by the real engine (tiny pipeline)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from bots import messages
from engine.requests import JobState
from engine.store import JobStore
from tests.slack.test_slack_features import command
from tests.slack_harness import SlackRig, jpeg_sizes, slack_settings, start_rig
from tests.standins.file_cdn import FileCDN
from tests.standins.slack_requests import shared_file
from tests.standins.slack_server import SlackStandIn
from tests.test_image_prompts import decompression_bomb, encoded

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def cdn() -> AsyncIterator[FileCDN]:
    async with FileCDN() as server:
        yield server


@pytest.fixture
async def rig(tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn, cdn: FileCDN) -> AsyncIterator[SlackRig]:
    settings = slack_settings(tmp_path, tiny_model_dir, standin)
    image_prompts = replace(settings.image_prompts, slack_file_origins=[cdn.origin], max_bytes=1_000_000)
    running = await start_rig(replace(settings, image_prompts=image_prompts), standin)
    yield running
    await running.stop()


def share(cdn: FileCDN, standin: SlackStandIn, data: bytes, name: str = "photo.png") -> dict[str, object]:
    url = cdn.add(cdn.slack_path(name), data, "image/png", token=standin.bot_token).split("?")[0]
    return shared_file(url, name, len(data))


async def journaled(rig: SlackRig) -> list[str]:
    assert rig.service is not None
    return [record.id for record in await JobStore(rig.service.database).in_states(list(JobState))]


async def test_a_mention_with_a_shared_image_delivers_four_images_generated_from_it(
    rig: SlackRig, standin: SlackStandIn, cdn: FileCDN
) -> None:
    picture = share(cdn, standin, encoded(Image.new("RGB", (80, 120), (40, 160, 90))))
    response = await rig.sender.post(rig.sender.app_mention("make it autumn --strength 0.4", files=[picture]))
    assert response.status == 200

    (upload,) = await rig.uploads()
    await rig.message_saying(messages.DONE)
    assert jpeg_sizes(upload) == [("JPEG", (128, 128))] * 4
    (request,) = cdn.requests
    assert request.authorization == f"Bearer {standin.bot_token}"  # files:read, with the bot token
    (job_id,) = await journaled(rig)
    record = await rig.engine.lookup(job_id)
    assert record is not None and record.request.prompt == "make it autumn"
    assert record.request.image_prompt is not None and record.request.image_prompt.strength == 0.4


async def test_a_workspace_default_strength_applies_where_the_prompt_names_none(
    rig: SlackRig, standin: SlackStandIn, cdn: FileCDN
) -> None:
    standin.admins.add("UADMIN")
    answer = await command(rig, "/imagine-settings", "strength 0.3", user_id="UADMIN")
    assert "strength: 0.3" in answer
    assert "strength must be a number" in await command(rig, "/imagine-settings", "strength 2", user_id="UADMIN")
    for text in ("make it autumn", "make it winter --strength 0.8"):
        picture = share(cdn, standin, encoded(Image.new("RGB", (64, 64), (40, 160, 90))), f"{len(text)}.png")
        await rig.sender.post(rig.sender.app_mention(text, files=[picture]))
    await rig.uploads(2)
    records = [await rig.engine.lookup(job_id) for job_id in await journaled(rig)]
    strengths = {r.request.prompt: r.request.image_prompt.strength for r in records if r and r.request.image_prompt}
    assert strengths == {"make it autumn": 0.3, "make it winter": 0.8}  # the prompt's own wins


async def test_a_dm_with_a_shared_image_is_an_image_prompt(rig: SlackRig, standin: SlackStandIn, cdn: FileCDN) -> None:
    picture = share(cdn, standin, encoded(Image.new("RGB", (64, 64), (200, 30, 30)), "WEBP"), "sketch.webp")
    await rig.sender.post(rig.sender.direct_message("a castle", files=[picture]))
    (upload,) = await rig.uploads()
    assert upload.channel_id == "DALICE" and jpeg_sizes(upload) == [("JPEG", (128, 128))] * 4


async def test_hostile_or_foreign_files_are_refused_and_the_engine_never_runs(
    rig: SlackRig, standin: SlackStandIn, cdn: FileCDN
) -> None:
    cases = [
        (share(cdn, standin, decompression_bomb(), "bomb.png"), "too many pixels"),
        (share(cdn, standin, b"%PDF-1.7 not a picture" * 10, "cat.png"), "JPEG, PNG or WebP"),
        (shared_file("https://files.slack.com.evil.example/files-pri/T1-F1/download/x.png", "x.png", 10), "uploaded"),
    ]
    for picture, reason in cases:
        await rig.sender.post(rig.sender.app_mention("a fox", files=[picture]))
        await rig.ephemeral_saying(reason)
        await rig.settled()
    assert len(cdn.requests) == 2  # the foreign host was never contacted
    assert rig.engine.pipeline_calls == 0 and await journaled(rig) == []


async def test_a_strength_out_of_range_is_refused(rig: SlackRig, standin: SlackStandIn, cdn: FileCDN) -> None:
    picture = share(cdn, standin, encoded(Image.new("RGB", (64, 64))))
    await rig.sender.post(rig.sender.app_mention("a fox --strength 0", files=[picture]))
    refusal = await rig.ephemeral_saying("strength must be between 0.1 and 1, got 0")
    assert refusal is not None and cdn.requests == [] and await journaled(rig) == []
