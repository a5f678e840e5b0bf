"""The chat's features on the playground, over real HTTP on the running service: an uploaded image prompt drawn by
the image-to-image pipeline (hostile pictures and oversized bodies refused before any GPU time), style presets
(moderation judges the styled prompt), and Delete (the owner, or a moderator signed in to /mod; nobody else)."""

from __future__ import annotations

import asyncio
import html
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bots.service import Service
from bots.web.mod.local_accounts import LocalAccounts
from config.settings import StylePreset
from engine.provenance.metadata import read_metadata
from engine.requests import JobState
from engine.worker.batches import load_runner
from engine.worker.runner import PipelineRunner
from tests.support import conversation_settled
from tests.test_image_prompts import decompression_bomb, encoded, png_declaring
from tests.web.playground_support import Visitor, base_url, playground_settings, running_service

pytestmark = pytest.mark.timeout(300)
MAX_BYTES = 1_000_000
"""The upload limit in these tests (`image_prompts.max_bytes`): the body cap is this plus the form's margin."""
FIFTY_MB = 50 * 1000 * 1000
MODERATOR_PASSWORD = "correct horse battery staple"


def feature_settings(tmp_path: Path, model_dir: Path) -> Any:
    settings = playground_settings(tmp_path, model_dir)
    gory = StylePreset(prompt="{prompt}, Elmo holding a bloody knife", description="for the moderation test")
    return replace(
        settings,
        image_prompts=replace(settings.image_prompts, max_bytes=MAX_BYTES),
        styles={**settings.styles, "gory": gory},
    )


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Any:
    return feature_settings(tmp_path, tiny_model_dir)


@pytest.fixture
def runner(settings: Any) -> PipelineRunner:
    return load_runner(settings)


@pytest.fixture
async def service(settings: Any, runner: PipelineRunner) -> AsyncIterator[Service]:
    async with running_service(settings, runner_factory=lambda: runner) as started:
        yield started


@pytest.fixture
async def ann(service: Service) -> AsyncIterator[Visitor]:
    async with Visitor(base_url(service)) as visitor:
        yield visitor


def photo() -> bytes:
    return encoded(Image.new("RGB", (96, 64), (30, 140, 220)), "JPEG")


async def settled(service: Service) -> None:
    assert service.conversation is not None
    await conversation_settled(service.conversation)


async def nothing_queued(service: Service) -> None:
    assert await service.engine.active() == [] and service.engine.pipeline_calls == 0


# ---- image prompts ----------------------------------------------------------------------------------------------


async def test_an_uploaded_image_becomes_four_images_from_the_image_pipeline(
    service: Service, ann: Visitor, runner: PipelineRunner
) -> None:
    page = (await ann.page("/"))[1]
    assert '<input type="file" name="image" accept="image/jpeg,image/png,image/webp">' in page
    status, _, location = await ann.imagine_from("as a watercolour", photo(), strength="0.6", seed="3")
    assert status == 303 and location.startswith("/jobs/"), status
    await settled(service)
    record = await service.engine.lookup(location.removeprefix("/jobs/"))
    assert record is not None and record.state is JobState.DELIVERED and len(record.images) == 4
    assert record.request.image_prompt is not None and record.request.image_prompt.strength == 0.6
    with Image.open(record.request.image_prompt.path) as stored:  # checked, fitted to the job, metadata-free
        assert (stored.format, stored.size) == ("PNG", (64, 64))
    with Image.open(record.images[0].path) as made:  # provenance says how it was made
        assert "from an image prompt" in (read_metadata(made).description or "")
    assert runner.image_pipe.unet is runner.pipe.unet and service.engine.pipeline_calls == 1
    status, page = await ann.page(location)
    assert status == 200 and page.count("<figure data-image=") == 4
    assert "from your image, strength <span data-strength>0.6</span>" in page


async def test_hostile_uploads_are_refused_with_the_chats_words_and_queue_nothing(
    service: Service, ann: Visitor
) -> None:
    cases = {
        "bomb.png": (decompression_bomb(), "image/png", "the image has too many pixels"),
        "huge.png": (png_declaring(100_000, 100_000), "image/png", "the image has too many pixels"),
        "picture.png": (b"just some text, not a picture\n" * 10, "image/png", "the image must be a JPEG, PNG or WebP"),
        "big.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_BYTES, "image/png", "the image is too large: the limit is 1 MB"),
    }
    for filename, (data, content_type, expected) in cases.items():
        status, page, location = await ann.imagine_from("a fox", data, filename, content_type)
        assert (status, location) == (400, ""), filename
        assert "I can't use that request: " + expected in page, filename
        assert 'role="alert" data-kind="refusal"' in page and "Traceback" not in page
    status, page, _ = await ann.imagine_from("a fox", photo(), strength="a lot")
    assert status == 400 and "strength must be a number from 0.1 to 1.0, got a lot" in page
    status, page, _ = await ann.imagine_from("a fox", photo(), strength="5")
    assert status == 400 and "strength must be between 0.1 and 1, got 5" in page
    await nothing_queued(service)


async def test_a_50_mb_body_is_refused_with_a_plain_page_before_it_is_read(service: Service, ann: Visitor) -> None:
    expected = "I can't use that request: the image is too large: the limit is 1 MB."

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: refused once reading passes the cap
        chunk = b"\0" * 1_000_000
        for _ in range(FIFTY_MB // len(chunk)):
            yield chunk

    declared = io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"\0" * FIFTY_MB)  # a file: its length is sent ahead
    for body in (declared, streamed()):
        form = aiohttp.FormData({"csrf_token": ann.token, "prompt": "a fox"})
        form.add_field("image", body, filename="huge.png", content_type="image/png")
        status, page = await post_refused(ann, form)
        assert status == 413 and expected in page
        assert "Traceback" not in page and "Entity" not in page
    await nothing_queued(service)
    assert (await ann.page("/"))[0] == 200  # the next request is served as ever


async def post_refused(visitor: Visitor, form: aiohttp.FormData) -> tuple[int, str]:
    async with visitor.http.post("/imagine", data=form, headers={"Origin": visitor.base_url}) as response:
        return response.status, html.unescape(await response.text())


# ---- style presets ----------------------------------------------------------------------------------------------


async def test_a_style_is_applied_shown_and_judged_by_moderation_as_styled(service: Service, ann: Visitor) -> None:
    page = (await ann.page("/"))[1]
    assert '<option value="oil-painting">oil-painting — a classical oil painting</option>' in page
    status, _, location = await ann.imagine("a harbour", style="oil-painting")
    assert status == 303
    await settled(service)
    record = await service.engine.lookup(location.removeprefix("/jobs/"))
    assert record is not None and record.request.style == "oil-painting"
    assert record.request.prompt == "a harbour, oil painting on canvas, visible brush strokes, rich colours"
    assert record.request.guidance_scale == 6.0 and "watermark" in record.request.negative_prompt
    page = (await ann.page(location))[1]
    assert "style <span data-style>oil-painting</span>" in page and "— style oil-painting" in page

    # The same harmless words in a style that adds a held subject: moderation sees the styled prompt and holds it.
    status, page, _ = await ann.imagine("a puppet", style="gory")
    assert status == 202 and "needs a quick look from a moderator" in page
    assert service.admission is not None
    (item,) = await service.admission.review.list()
    assert item.request.prompt == "a puppet, Elmo holding a bloody knife" and item.request.style == "gory"


async def test_an_unknown_style_is_refused_and_queues_nothing(service: Service, ann: Visitor) -> None:
    status, page, location = await ann.imagine("a harbour", style="no-such-style")
    assert (status, location) == (400, "")
    assert "There is no style called “no-such-style”. The styles are: anime, gory, oil-painting" in page
    await nothing_queued(service)


# ---- Delete -----------------------------------------------------------------------------------------------------


async def delivered(service: Service, visitor: Visitor, prompt: str) -> tuple[str, list[Path]]:
    status, _, location = await visitor.imagine(prompt)
    assert status == 303, status
    await settled(service)
    job_id = location.removeprefix("/jobs/")
    record = await service.engine.lookup(job_id)
    assert record is not None and len(record.images) == 4
    files = [Path(image.path) for image in record.images]
    assert all(await asyncio.gather(*(asyncio.to_thread(path.is_file) for path in files)))
    return job_id, files


async def test_the_owner_deletes_a_job_its_files_go_and_its_page_says_so(service: Service, ann: Visitor) -> None:
    job_id, files = await delivered(service, ann, "a lighthouse to delete")
    assert f'value="imagine:d:{job_id}"' in (await ann.page(f"/jobs/{job_id}"))[1]  # the chat's button id
    status, _, location = await ann.post("/press", {"button": f"imagine:d:{job_id}"})
    assert (status, location) == (303, f"/jobs/{job_id}")
    assert not any(await asyncio.gather(*(asyncio.to_thread(path.exists) for path in files)))
    record = await service.engine.lookup(job_id)
    assert record is not None and record.deleted
    status, page = await ann.page(location)
    assert status == 200 and "🗑️ These images were deleted." in page and "<figure" not in page
    assert "imagine:d:" not in page and "imagine:r:" not in page
    assert (await ann.get_bytes(f"/jobs/{job_id}/images/0.jpg"))[0] == 404
    assert "🗑️ deleted" in (await ann.page("/"))[1]  # the history


async def test_another_session_cannot_delete_but_a_signed_in_moderator_can(service: Service, ann: Visitor) -> None:
    job_id, files = await delivered(service, ann, "ann's walrus")
    async with Visitor(base_url(service)) as bob:
        status, page, _ = await bob.post("/press", {"button": f"imagine:d:{job_id}"})
        assert status == 404 and "walrus" not in page
    assert all(await asyncio.gather(*(asyncio.to_thread(path.is_file) for path in files)))
    record = await service.engine.lookup(job_id)
    assert record is not None and not record.deleted

    await LocalAccounts(service.database).add("modmin", MODERATOR_PASSWORD)
    async with Visitor(base_url(service)) as moderator:
        await moderator.page("/mod/login")
        status, _, location = await moderator.post("/mod/login", {"name": "modmin", "password": MODERATOR_PASSWORD})
        assert (status, location) == (303, "/mod"), status
        await moderator.page("/")  # the new session's token
        status, _, location = await moderator.post("/press", {"button": f"imagine:d:{job_id}"})
        assert (status, location) == (303, f"/jobs/{job_id}")
    assert not any(await asyncio.gather(*(asyncio.to_thread(path.exists) for path in files)))
    status, page = await ann.page(f"/jobs/{job_id}")
    assert status == 200 and "🗑️ These images were deleted." in page
