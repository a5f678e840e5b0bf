"""Scale-out mode through a chat frontend: the Discord rig's service with `engine.queue = "redis"` (it loads no
model) and a GPU worker taking the job from the real Redis, both journaling in the real PostgreSQL; the frontend
delivers the four JPEGs the worker wrote, once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from bots import messages
from engine.redis_streams import RedisJobQueue
from engine.requests import JobState
from engine.worker.remote import RemoteWorker
from tests.discord_harness import discord_settings, jpeg_sizes, start_rig
from tests.redis_support import REDIS_URL, redis_prefix  # noqa: F401 (a fixture)
from tests.standins.discord_server import DiscordStandIn
from tests.storage_support import postgres_url  # noqa: F401 (a fixture)


async def test_a_frontend_delivers_what_a_worker_rendered_once(
    tmp_path: Path,
    tiny_model_dir: Path,
    standin: DiscordStandIn,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = discord_settings(tmp_path, tiny_model_dir, standin)
    engine = replace(
        settings.engine, queue="redis", redis_url=REDIS_URL, redis_prefix=redis_prefix, frontend_id="discord-1"
    )
    settings = replace(settings, engine=engine, store=replace(settings.store, url=postgres_url))
    worker = RemoteWorker(settings)
    await worker.start()
    stop = asyncio.Event()
    working = asyncio.create_task(worker.run(stop))
    rig = await start_rig(settings, standin)
    try:
        assert isinstance(rig.engine, RedisJobQueue)
        alice = standin.make_user("alice")
        await standin.send_command(alice, {"prompt": "a lighthouse at dawn", "seed": 7})
        (images,) = await rig.images_messages()
        await rig.message_saying(messages.DONE)
        job_id = images.custom_ids[0].split(":")[2]
        record = await rig.engine.lookup(job_id)
    finally:
        await rig.stop()
        stop.set()
        await working
        await worker.close()
    assert jpeg_sizes(images) == [("JPEG", (128, 128))] * 4
    assert len(standin.messages_with_files()) == 1
    assert record is not None and record.state is JobState.DELIVERED
    assert [job for _, job in worker.started] == [job_id]
