"""Image prompts in the platform-neutral conversation, with the picture's bytes already in hand (as the web
playground will hand them over): generated from, rerolled from the same picture, refused when hostile."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bots.conversation import ImageSource
from engine.requests import JobState
from tests.support import conversation_settled, make_settings
from tests.test_conversation import RecordingReplier, command, running, stop
from tests.test_image_prompts import decompression_bomb, encoded


async def test_an_uploaded_picture_is_generated_from_and_a_reroll_starts_from_it_again(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, base_size=64, steps=2)
    engine, conversation = await running(settings)
    upload = ImageSource(data=encoded(Image.new("RGB", (120, 90), (250, 200, 0)), "WEBP"))
    first, again = RecordingReplier(), RecordingReplier()
    try:
        job_id = await conversation.imagine(command("", image=upload, strength=0.9), first)
        await first.until(first.finished_status)
        record = await engine.lookup(job_id or "")
        assert record is not None and record.request.image_prompt is not None
        await conversation.press(f"imagine:r:{job_id}", record.request.requester, again)
        await again.until(again.finished_status)
        await conversation_settled(conversation)
        (reroll,) = again.deliveries
        rerolled = await engine.lookup(reroll.job_id)
    finally:
        await stop(engine, conversation)
    assert not first.refusals and len(first.deliveries[0].attachments) == 4
    assert record.request.image_prompt.strength == 0.9
    with Image.open(record.request.image_prompt.path) as stored:
        assert (stored.format, stored.size) == ("PNG", (64, 64))
    assert rerolled is not None and rerolled.id != job_id and rerolled.state is JobState.DELIVERED
    assert rerolled.request.image_prompt == record.request.image_prompt  # the same checked picture


async def test_a_hostile_upload_is_refused_and_nothing_is_queued(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, base_size=64, steps=2)
    engine, conversation = await running(settings)
    replier = RecordingReplier()
    try:
        job_id = await conversation.imagine(command("a fox", image=ImageSource(data=decompression_bomb())), replier)
    finally:
        await stop(engine, conversation)
    assert job_id is None and engine.pipeline_calls == 0
    (refusal,) = replier.refusals
    assert refusal == "I can't use that request: the image has too many pixels: the limit is 16.8 megapixels."
