"""Image prompts (img2img) below the chat layer: the input checks (hostile files refused before anything is
decoded), the image-to-image pipeline built from the loaded components, batching image prompts only with each
other, and an image prompt that survives the journal and the Redis payload."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.errors import InvalidRequest
from engine.input_images import (
    InputImageLimits,
    InvalidImage,
    check_input_image,
    open_input_image,
    save_input_image,
)
from engine.local import LocalJobQueue
from engine.postprocess import PlainJpeg
from engine.redis_streams import record_from_json, record_to_json
from engine.requests import GenerationRequest, ImagePrompt, JobState, Requester
from engine.store import JobStore
from engine.validation import batch_key, prepare_record
from engine.worker.runner import BatchShape, ImageTask
from tests.support import gated_runner, make_settings

SMALL = (64, 64)
LIMITS = InputImageLimits(max_bytes=2_000_000, max_pixels=4_000_000)
ALICE = Requester(platform="test", user_id="alice")
BOB = Requester(platform="test", user_id="bob")
CAROL = Requester(platform="test", user_id="carol")


def encoded(image: Image.Image, image_format: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def decompression_bomb() -> bytes:
    """A 5000×5000 PNG of one colour: ~25 KB on disk, 25 megapixels (75 MB as RGB) once decoded; under Pillow's
    own bomb threshold (89 megapixels), so only an explicit limit refuses it."""
    return encoded(Image.new("L", (5000, 5000)), optimize=True)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares `width`×`height` followed by a few bytes of data: refused from the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


HOSTILE = {
    "a decompression bomb": (decompression_bomb, "too many pixels"),
    "a PNG declaring 100000x100000": (lambda: png_declaring(100_000, 100_000), "too many pixels"),
    "a PNG declaring 3000x3000 (under Pillow's limit)": (lambda: png_declaring(3000, 3000), "too many pixels"),
    "a text file called picture.png": (lambda: b"just some text, not a picture\n" * 10, "JPEG, PNG or WebP"),
    "a GIF": (lambda: encoded(Image.new("RGB", (8, 8)), "GIF"), "JPEG, PNG or WebP"),
    "a truncated PNG": (lambda: encoded(Image.effect_noise((64, 64), 50))[:200], "could not be read"),
    "a file over the byte limit": (lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * 2_000_000, "too large"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_images_are_refused_with_a_clear_reason(name: str) -> None:
    make, reason = HOSTILE[name]
    with pytest.raises(InvalidImage) as refused:
        check_input_image(make(), LIMITS, SMALL)
    assert reason in str(refused.value)
    assert isinstance(refused.value, InvalidRequest)  # shown to the user as an invalid request, never a traceback


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_jpeg_png_and_webp_are_taken_and_fitted_to_the_job_size(image_format: str) -> None:
    picture = check_input_image(encoded(Image.new("RGB", (300, 100), (10, 200, 30)), image_format), LIMITS, (64, 128))
    assert picture.size == (64, 128) and picture.mode == "RGB"
    assert np.abs(np.asarray(picture, dtype=int) - (10, 200, 30)).mean() < 8


def test_exif_orientation_is_applied_and_metadata_dropped(tmp_path: Path) -> None:
    # Stored landscape, left red and right blue; EXIF orientation 6 says "rotate 90° clockwise to show it": shown
    # upright it is portrait, red on top.
    stored = Image.new("RGB", (160, 80), (220, 0, 0))
    stored.paste((0, 0, 220), (80, 0, 160, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "Phone maker"  # Make
    data = encoded(stored, "JPEG", exif=exif.tobytes(), quality=95)

    picture = check_input_image(data, LIMITS, (64, 128))
    top, bottom = np.asarray(picture)[8, 32], np.asarray(picture)[120, 32]
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]

    path = save_input_image(picture, tmp_path)
    with Image.open(path) as stored_again:
        assert stored_again.format == "PNG" and not stored_again.getexif() and "exif" not in stored_again.info
    assert open_input_image(path, (64, 128)).size == (64, 128)


def test_strength_is_checked_with_the_bad_value(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = make_settings(tmp_path, tiny_model_dir).engine
    for strength in (0.05, 1.5, math.nan, -1):
        request = GenerationRequest(prompt="a fox", size=SMALL, image_prompt=ImagePrompt("x.png", strength))
        with pytest.raises(InvalidRequest, match=r"strength must be between 0\.1 and 1, got"):
            prepare_record(request, config)
    # An image prompt may come without words; a text prompt may not.
    assert prepare_record(GenerationRequest(prompt="", size=SMALL, image_prompt=ImagePrompt("x.png", 0.5)), config)
    with pytest.raises(InvalidRequest, match="prompt must not be empty"):
        prepare_record(GenerationRequest(prompt="", size=SMALL), config)


def test_an_image_prompt_survives_the_redis_payload_and_gets_its_own_batch_key(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    config = make_settings(tmp_path, tiny_model_dir).engine
    prompt = ImagePrompt("/shared/inputs/abc.png", 0.6)
    image_record = prepare_record(GenerationRequest(prompt="a fox", size=SMALL, image_prompt=prompt), config)
    text_record = prepare_record(GenerationRequest(prompt="a fox", size=SMALL), config)
    assert record_from_json(record_to_json(image_record)).request.image_prompt == prompt
    assert batch_key(text_record) == "64x64x4" and batch_key(image_record) == "64x64x4xi0.6"


def test_the_image_pipeline_shares_the_loaded_components(tmp_path: Path, tiny_model_dir: Path) -> None:
    runner, _ = gated_runner(make_settings(tmp_path, tiny_model_dir))
    image_pipe = runner.image_pipe
    assert type(image_pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(image_pipe, name) is getattr(runner.pipe, name), name
    weight = next(runner.pipe.unet.parameters())
    assert next(image_pipe.unet.parameters()).data_ptr() == weight.data_ptr()  # one copy of the weights
    assert runner.image_pipe is image_pipe  # built once


def input_image(tmp_path: Path, colour: tuple[int, int, int]) -> str:
    return save_input_image(Image.new("RGB", SMALL, colour), tmp_path / "inputs")


def image_request(prompt: str, requester: Requester, path: str, **fields: Any) -> GenerationRequest:
    image_prompt = ImagePrompt(path, fields.pop("strength", 0.5))
    return GenerationRequest(prompt, requester, size=SMALL, steps=2, image_prompt=image_prompt, **fields)


async def test_image_prompts_batch_with_each_other_only_and_start_from_their_image(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, max_batch_images=12)
    runner, gate = gated_runner(settings)
    calls: list[tuple[float | None, int]] = []
    generate = runner.generate

    def recording(
        tasks: Sequence[ImageTask], shape: BatchShape, on_step: Callable[[int, int], None]
    ) -> list[Image.Image]:
        calls.append((shape.strength, len(tasks)))
        return generate(tasks, shape, on_step)

    runner.generate = recording  # type: ignore[method-assign]
    red, blue = input_image(tmp_path, (220, 20, 20)), input_image(tmp_path, (20, 20, 220))
    engine = LocalJobQueue(settings, runner_factory=lambda: runner, postprocessor=PlainJpeg())
    await engine.start()
    try:
        blocker = await engine.submit(GenerationRequest("blocker", CAROL, size=SMALL, steps=2, num_images=1))
        await gate.wait_reached()
        from_red = await engine.submit(image_request("a fox", ALICE, red, seed=5))
        text = await engine.submit(GenerationRequest("a fox", BOB, size=SMALL, steps=2, seed=5))
        from_blue = await engine.submit(image_request("a fox", CAROL, blue, seed=5))
        gate.release()
        results = await asyncio.gather(*(job.result() for job in (blocker, from_red, text, from_blue)))
    finally:
        await engine.shutdown()
    # blocker alone; the two image prompts together (8 images), the text prompt in its own call
    assert sorted(calls, key=str) == sorted([(None, 1), (0.5, 8), (None, 4)], key=str)
    red_images, blue_images = results[1].images, results[3].images
    assert [image.seed for image in red_images] == [5, 6, 7, 8]
    with Image.open(red_images[0].path) as a, Image.open(blue_images[0].path) as b:
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).mean() > 1  # same seed, other picture


async def test_a_journaled_image_prompt_resumes_with_its_image_after_a_restart(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir)
    runner, gate = gated_runner(settings)
    path = input_image(tmp_path, (200, 120, 40))
    first = LocalJobQueue(settings, runner_factory=lambda: runner, postprocessor=PlainJpeg())
    await first.start()
    blocker = await first.submit(GenerationRequest("blocker", BOB, size=SMALL, steps=2, num_images=1))
    await gate.wait_reached()
    job = await first.submit(image_request("a fox", ALICE, path, strength=0.8, seed=9))
    stopping = asyncio.create_task(first.shutdown(drain=False))
    gate.release()
    await stopping

    second = LocalJobQueue(settings, postprocessor=PlainJpeg())
    await second.start()
    try:
        resumed = {handle.id: handle for handle in await second.active()}
        assert set(resumed) == {blocker.id, job.id}
        assert resumed[job.id].request.image_prompt == ImagePrompt(path, 0.8)
        result = await resumed[job.id].result()
        await resumed[blocker.id].result()
    finally:
        await second.shutdown()
    assert [image.seed for image in result.images] == [9, 10, 11, 12]
    store = await JobStore.open(settings.store.url)
    try:
        record = await store.get(job.id)
        assert record is not None and record.state is JobState.DONE
        assert record.request.image_prompt == ImagePrompt(path, 0.8)
    finally:
        await store.close()


def test_the_metadata_of_an_image_made_from_an_image_prompt_says_so() -> None:
    from engine.provenance.metadata import read_metadata, save_options

    for from_image in (False, True):
        data = encoded(Image.new("RGB", SMALL), "JPEG", **save_options("tiny-sd", from_image))
        with Image.open(io.BytesIO(data)) as image:
            info = read_metadata(image)
        assert info.says_ai_generated and ("from an image prompt" in (info.description or "")) is from_image
