"""The playground in a real Chromium: generate and see four images, their seeds and a working download; an
uploaded picture in a style drawn into four images, then deleted; a refusal, a non-image upload and a rate limit
shown as plainly as in chat. Screenshots of every page go to tests/artefacts/; the one after a generation is also
the README's (docs/screenshots/playground.png) when IMAGINE_UPDATE_SCREENSHOTS=1."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from playwright.async_api import FilePayload, Page, expect

from bots.service import Service
from tests.web.browser import screenshot, update_docs_screenshot
from tests.web.playground_support import BLOCKED_PROMPT, base_url, playground_settings, running_service

pytestmark = pytest.mark.timeout(300)


def upload(name: str, data: bytes, mime_type: str = "image/png") -> FilePayload:
    return {"name": name, "mimeType": mime_type, "buffer": data}


def photo_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (30, 140, 220)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def service(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[Service]:
    settings = playground_settings(tmp_path, tiny_model_dir)
    settings = replace(settings, engine=replace(settings.engine, base_size=256))  # big enough to look at
    async with running_service(settings) as started:
        yield started


async def test_generate_shows_four_images_with_seeds_and_a_download_is_a_jpeg(service: Service, page: Page) -> None:
    await page.goto(base_url(service) + "/")
    await screenshot(page, "playground-start")
    await page.get_by_placeholder("What should I imagine?").fill("a lighthouse at dawn, oil painting")
    await page.get_by_role("button", name="Generate").click()

    figures = page.locator("figure[data-image]")
    await expect(figures).to_have_count(4)
    for index in range(4):  # every image loaded and decoded in the browser
        await expect(figures.nth(index).locator("img")).to_have_js_property("complete", True)
        width = await figures.nth(index).locator("img").evaluate("image => image.naturalWidth")
        assert width == 256
    job_id = page.url.rsplit("/", 1)[1]
    record = await service.engine.lookup(job_id)
    assert record is not None
    await expect(page.locator("[data-seed]")).to_have_text([str(image.seed) for image in record.images])
    await expect(page.get_by_role("status").first).to_contain_text("Done")

    async with page.expect_download() as downloading:
        await figures.nth(1).get_by_role("link", name="Download").click()
    download = await downloading.value
    assert download.suggested_filename == f"imagine-{job_id[:8]}-2.jpg"
    saved = await download.path()
    data = await asyncio.to_thread(Path(saved).read_bytes)
    assert data.startswith(b"\xff\xd8\xff") and len(data) > 1000

    shot = await screenshot(page, "playground-done")
    await update_docs_screenshot(shot, "playground.png")

    await figures.nth(2).get_by_role("button", name="U3").click()  # that image alone, as U3 in chat
    await expect(page.get_by_text(f"Image 3 of “{record.request.prompt}”")).to_be_visible()
    await expect(page.locator("[data-seed]")).to_have_text(str(record.images[2].seed))
    await screenshot(page, "playground-image")


async def test_an_uploaded_picture_in_a_style_becomes_four_images_and_is_deleted(service: Service, page: Page) -> None:
    await page.goto(base_url(service) + "/")
    await page.get_by_text("Options:").click()
    await page.get_by_placeholder("What should I imagine?").fill("a harbour")
    picker = page.get_by_label("Start from an image")
    await picker.set_input_files(upload("notes.png", b"just some text, not a picture\n"))
    await page.get_by_role("button", name="Generate").click()
    await expect(page.get_by_role("alert")).to_contain_text("the image must be a JPEG, PNG or WebP picture")

    await page.get_by_text("Options:").click()
    await page.get_by_label("Start from an image").set_input_files(upload("harbour.png", photo_png()))
    await page.get_by_label("Strength").fill("0.5")
    await page.get_by_label("Style").select_option("watercolour")
    await page.get_by_role("button", name="Generate").click()
    await expect(page.locator("figure[data-image]")).to_have_count(4)
    await expect(page.locator(".job-options")).to_have_text("style watercolour · from your image, strength 0.5")
    await screenshot(page, "playground-from-image")
    await page.get_by_role("button", name="🗑️ Delete").click()
    await expect(page.get_by_role("status").first).to_have_text("🗑️ These images were deleted.")
    await expect(page.locator("figure[data-image]")).to_have_count(0)
    assert service.conversation is not None
    await service.conversation.settled()


async def test_a_blocked_prompt_and_a_rate_limit_are_shown_plainly(service: Service, page: Page) -> None:
    start = base_url(service) + "/"
    await page.goto(start)
    prompt = page.get_by_placeholder("What should I imagine?")
    await prompt.fill(BLOCKED_PROMPT)
    await page.get_by_role("button", name="Generate").click()
    refusal = page.get_by_role("alert")
    await expect(refusal).to_contain_text("aren't allowed here")
    await expect(refusal).not_to_contain_text("porn")  # the category, never the matched words
    await screenshot(page, "playground-refused")

    await prompt.fill("a quiet harbour")  # the blocked prompt spent one of the burst of two
    await page.get_by_role("button", name="Generate").click()
    await expect(page.locator("#job")).to_be_visible()
    await page.goto(start)
    await page.get_by_placeholder("What should I imagine?").fill("a quiet harbour at night")
    await page.get_by_role("button", name="Generate").click()
    await expect(page.get_by_role("alert")).to_contain_text("You're sending prompts quickly. Try again in ")
    await expect(page.get_by_placeholder("What should I imagine?")).to_have_value("a quiet harbour at night")
    await screenshot(page, "playground-rate-limited")
    assert service.conversation is not None
    await service.conversation.settled()
