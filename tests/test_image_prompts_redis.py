"""An image prompt in scaled-out mode, on the real Redis and PostgreSQL: the frontend journals it and queues it on
a stream of its own (image prompts never share a batch with text prompts), a worker reads the request with its
picture's path from the shared folder and renders it with the image-to-image pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import redis.asyncio as aioredis
from PIL import Image

from engine.input_images import save_input_image
from engine.requests import GenerationRequest, ImagePrompt, JobState, Requester
from engine.store import JobStore
from engine.worker.batches import load_runner
from engine.worker.runner import BatchShape, ImageTask
from tests.redis_support import REDIS_URL, redis_prefix, scale_out_settings  # noqa: F401 (a fixture)
from tests.storage_support import postgres_url  # noqa: F401 (a fixture)
from tests.test_redis_queue import finished, running_worker, started_frontend

ALICE = Requester(platform="test", user_id="alice")
BOB = Requester(platform="test", user_id="bob")


async def test_an_image_prompt_travels_through_redis_on_its_own_stream(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = scale_out_settings(tmp_path, tiny_model_dir, postgres_url, redis_prefix)
    path = save_input_image(Image.new("RGB", (64, 64), (90, 30, 160)), Path(settings.engine.output_dir) / "inputs")
    runner = load_runner(settings)
    strengths: list[float | None] = []
    generate = runner.generate

    def recording(
        tasks: Sequence[ImageTask], shape: BatchShape, on_step: Callable[[int, int], None]
    ) -> list[Image.Image]:
        strengths.append(shape.strength)
        return generate(tasks, shape, on_step)

    runner.generate = recording  # type: ignore[method-assign]
    async with running_worker(settings, lambda: runner), started_frontend(settings, "f1") as queue:
        image_job = await queue.submit(
            GenerationRequest("a fox", ALICE, size=(64, 64), steps=2, image_prompt=ImagePrompt(path, 0.5))
        )
        text_job = await queue.submit(GenerationRequest("a fox", BOB, size=(64, 64), steps=2))
        ends = await asyncio.gather(finished(image_job), finished(text_job))
    assert [end.state for end in ends] == [JobState.DONE, JobState.DONE] and len(ends[0].images) == 4
    assert sorted(strengths, key=str) == [0.5, None]  # one image-to-image call, one text-to-image call

    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        streams = await client.smembers(f"{redis_prefix}:streams")  # type: ignore[misc]
    finally:
        await client.aclose()
    assert streams == {f"{redis_prefix}:jobs:64x64x2", f"{redis_prefix}:jobs:64x64x2xi0.5"}
    store = await JobStore.open(settings.store.url)
    try:
        record = await store.get(image_job.id)
    finally:
        await store.close()
    assert record is not None and record.request.image_prompt == ImagePrompt(path, 0.5)
