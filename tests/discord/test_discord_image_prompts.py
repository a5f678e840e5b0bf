"""Image prompts in Discord at the wire level: real discord.py against the stand-in Discord, the stand-in CDN
serving attachments, the real conversation and engine (tiny pipeline). A picture is fetched only from the allowed
CDN, checked before any GPU time (hostile files refused with a clear message, the engine never called), and
generated from with the image-to-image pipeline."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bots import messages
from engine.provenance.metadata import read_metadata
from engine.requests import JobState
from engine.screening import ScreeningResult
from engine.store import JobStore
from engine.worker.batches import load_runner
from engine.worker.runner import PipelineRunner
from tests.discord.test_discord_features import set_setting
from tests.discord_harness import DiscordRig, discord_settings, jpeg_sizes, start_rig
from tests.standins.discord_server import DiscordStandIn, StandInAttachment
from tests.standins.file_cdn import FileCDN
from tests.test_image_prompts import decompression_bomb, encoded, png_declaring

pytestmark = pytest.mark.timeout(240)
MAX_BYTES = 1_000_000


@pytest.fixture
async def cdn() -> AsyncIterator[FileCDN]:
    async with FileCDN() as server:
        yield server


@pytest.fixture
def runner(tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn, cdn: FileCDN) -> PipelineRunner:
    return load_runner(image_prompt_settings(tmp_path, tiny_model_dir, standin, cdn))


def image_prompt_settings(tmp_path: Path, model_dir: Path, standin: DiscordStandIn, cdn: FileCDN):  # type: ignore[no-untyped-def]
    settings = discord_settings(tmp_path, model_dir, standin)
    image_prompts = replace(settings.image_prompts, discord_file_origins=[cdn.origin], max_bytes=MAX_BYTES)
    return replace(settings, image_prompts=image_prompts)


@pytest.fixture
async def rig(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn, cdn: FileCDN, runner: PipelineRunner
) -> AsyncIterator[DiscordRig]:
    settings = image_prompt_settings(tmp_path, tiny_model_dir, standin, cdn)
    running = await start_rig(settings, standin, runner_factory=lambda: runner)
    yield running
    await running.stop()


def photo(colour: tuple[int, int, int] = (30, 140, 220), size: tuple[int, int] = (96, 64)) -> bytes:
    return encoded(Image.new("RGB", size, colour), "JPEG")


def attach(
    cdn: FileCDN, data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg"
) -> StandInAttachment:
    url = cdn.add(cdn.discord_path(filename), data, content_type)
    return StandInAttachment(url=url, filename=filename, size=len(data), content_type=content_type)


async def journaled_jobs(rig: DiscordRig) -> list[str]:
    assert rig.service is not None
    return [record.id for record in await JobStore(rig.service.database).in_states(list(JobState))]


async def test_imagine_with_an_attachment_delivers_four_images_from_the_image_pipeline(
    rig: DiscordRig, standin: DiscordStandIn, cdn: FileCDN, runner: PipelineRunner
) -> None:
    alice = standin.make_user("alice")
    picture = attach(cdn, photo())
    await standin.send_command(
        alice, {"prompt": "as a watercolour", "seed": 3, "strength": 0.6}, attachments={"image": picture}
    )
    (images,) = await rig.images_messages()
    await rig.message_saying(messages.DONE)

    assert jpeg_sizes(images) == [("JPEG", (128, 128))] * 4
    assert "as a watercolour" in images.content and "seeds 3–6" in images.content
    with Image.open(io.BytesIO(images.files[0].data)) as delivered:  # provenance says how it was made
        assert "from an image prompt" in (read_metadata(delivered).description or "")
    path = next(iter(cdn.files))
    assert cdn.asked_for(path) == 1
    (job_id,) = await journaled_jobs(rig)
    record = await rig.engine.lookup(job_id)
    assert record is not None and record.request.image_prompt is not None
    assert record.request.image_prompt.strength == 0.6
    with Image.open(record.request.image_prompt.path) as stored:  # checked, fitted to the job, metadata-free
        assert (stored.format, stored.size) == ("PNG", (128, 128))
    # The image-to-image pipeline ran on the loaded model's own UNet.
    assert runner.image_pipe.unet is runner.pipe.unet and rig.engine.pipeline_calls == 1


async def test_the_registered_command_offers_an_image_and_a_strength(rig: DiscordRig, standin: DiscordStandIn) -> None:
    (sync,) = standin.requests_to("PUT", rf"/applications/{standin.application_id}/commands")
    options = {option["name"]: option for option in sync.json[0]["options"]}
    assert options["image"]["type"] == 11 and not options["image"].get("required")
    assert options["image"]["description"] == messages.DISCORD_IMAGE_HELP
    assert options["strength"]["type"] == 10
    assert (options["strength"]["min_value"], options["strength"]["max_value"]) == (0.1, 1.0)


async def test_a_dm_with_only_an_image_is_an_image_prompt(
    rig: DiscordRig, standin: DiscordStandIn, cdn: FileCDN
) -> None:
    bob = standin.make_user("bob")
    await standin.send_dm(bob, "", attachments=[attach(cdn, photo((200, 40, 40)), "IMG_0001.png", "image/png")])
    (images,) = await rig.images_messages(channel_id=standin.dm_channel_id(bob))
    assert jpeg_sizes(images) == [("JPEG", (128, 128))] * 4
    (job_id,) = await journaled_jobs(rig)
    record = await rig.engine.lookup(job_id)
    assert record is not None and record.request.image_prompt is not None
    assert record.request.image_prompt.strength == rig.settings.image_prompts.default_strength


async def test_a_server_default_strength_applies_where_the_command_names_none(
    rig: DiscordRig, standin: DiscordStandIn, cdn: FileCDN
) -> None:
    assert "strength: 0.3" in (await set_setting(standin, "strength", "0.3")).content
    assert "strength must be a number" in (await set_setting(standin, "strength", "zero")).content
    alice = standin.make_user("alice")
    await standin.send_command(alice, {"prompt": "light"}, attachments={"image": attach(cdn, photo(), "a.jpg")})
    own = {"prompt": "heavy", "strength": 0.9}
    await standin.send_command(alice, own, attachments={"image": attach(cdn, photo((9, 9, 9)), "b.jpg")})
    await rig.images_messages(2)
    records = [await rig.engine.lookup(job_id) for job_id in await journaled_jobs(rig)]
    strengths = {r.request.prompt: r.request.image_prompt.strength for r in records if r and r.request.image_prompt}
    assert strengths == {"light": 0.3, "heavy": 0.9}  # the command's own wins


async def refused(rig: DiscordRig, standin: DiscordStandIn, text: str, **command: object) -> str:
    """Send /imagine, wait for the private refusal, and return what it said."""
    user = standin.make_user("mallory")
    await standin.send_command(user, {"prompt": "a fox", **command.pop("options", {})}, **command)  # type: ignore[arg-type, dict-item]
    message = await rig.message_saying(text)
    await rig.adapter.settled()
    return message.content


async def test_hostile_images_are_refused_clearly_and_the_engine_never_runs(
    rig: DiscordRig, standin: DiscordStandIn, cdn: FileCDN
) -> None:
    big_stream = cdn.add_stream(cdn.discord_path("huge.png"), 50_000_000)
    cases = {
        "a decompression bomb": (attach(cdn, decompression_bomb(), "bomb.png", "image/png"), "too many pixels"),
        "a PNG declaring a huge size": (attach(cdn, png_declaring(60_000, 60_000), "big.png"), "too many pixels"),
        "a text file named .png": (attach(cdn, b"not a picture at all\n" * 20, "cat.png"), "JPEG, PNG or WebP"),
        "a 50 MB file": (StandInAttachment(big_stream, "huge.png", 50_000_000), "too large"),
        "a 50 MB file declared as 5 KB": (StandInAttachment(big_stream, "huge.png", 5_000), "too large"),
        "a link to another host": (
            StandInAttachment("https://evil.example/x.png", "x.png", 100),
            "uploaded to this chat",
        ),
    }
    for name, (attachment, reason) in cases.items():
        text = await refused(rig, standin, reason, attachments={"image": attachment})
        assert "Traceback" not in text and "Error" not in text and "/" not in text.replace("0.1", ""), (name, text)
    # The honest 50 MB file was never fetched; the lying one was cut off while streaming, far short of its end.
    assert cdn.asked_for(big_stream.removeprefix(cdn.origin)) == 1
    assert cdn.sent_bytes[big_stream.removeprefix(cdn.origin)] < 50_000_000
    assert not cdn.finished[big_stream.removeprefix(cdn.origin)]
    assert rig.engine.pipeline_calls == 0 and await journaled_jobs(rig) == []


async def test_a_strength_out_of_range_is_refused_before_the_image_is_fetched(
    rig: DiscordRig, standin: DiscordStandIn, cdn: FileCDN
) -> None:
    picture = attach(cdn, photo())
    text = await refused(
        rig, standin, "strength must be between 0.1 and 1", options={"strength": 1.5}, attachments={"image": picture}
    )
    assert "got 1.5" in text
    assert cdn.requests == [] and rig.engine.pipeline_calls == 0 and await journaled_jobs(rig) == []


def flags_red_pictures(image: Image.Image) -> ScreeningResult:
    """The image filter's answer is the boundary: here it objects to mostly red pictures (the tiny model's outputs
    are colourful noise, never mostly red)."""
    red, green, blue = (float(np.asarray(image.convert("RGB"))[..., channel].mean()) for channel in range(3))
    flagged = red > 150 and green < 80 and blue < 80
    return ScreeningResult(flagged, ("FEMALE_BREAST_EXPOSED (0.91)",) if flagged else ())


async def test_a_flagged_input_image_is_held_for_review_and_generated_from_only_once_approved(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn, cdn: FileCDN
) -> None:
    base = image_prompt_settings(tmp_path, tiny_model_dir, standin, cdn)
    settings = replace(base, moderation=replace(base.moderation, embedding=False))
    rig = await start_rig(settings, standin, moderated=True, screener=flags_red_pictures)
    try:
        erin, mod = standin.make_user("erin"), standin.make_user("mod")
        await standin.send_command(
            erin, {"prompt": "a beach"}, attachments={"image": attach(cdn, photo((230, 20, 20)))}
        )
        await rig.message_saying(messages.IMAGE_HELD_FOR_REVIEW)
        channel = standin.moderator_channel_id
        post = await standin.wait_until(lambda: next(iter(standin.channel_messages(channel)), None), what="a post")
        assert "input image flagged" in post.content and "FEMALE_BREAST_EXPOSED" in post.content
        ((shown_format, _),) = jpeg_sizes(post)
        with Image.open(io.BytesIO(post.files[0].data)) as shown:  # the withheld copy, with its black label box
            assert shown_format == "PNG" and np.asarray(shown.convert("RGB"))[..., 0].min() < 50
        await rig.adapter.settled()
        assert rig.engine.pipeline_calls == 0 and await journaled_jobs(rig) == []

        await standin.click(post.id, post.custom_ids[0], mod, role_ids=[standin.moderator_role.id])
        (images,) = await rig.images_messages(channel_id=standin.channel_id)
    finally:
        await rig.stop()
    assert jpeg_sizes(images) == [("JPEG", (128, 128))] * 4
