"""The playground over real HTTP on the running service: a prompt becomes four images on its page, refusals and
holds are said plainly, the live stream, buttons, and nobody else's session sees or acts on a job."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.fernet import Fernet

from bots.service import Service
from bots.web.playground_replier import Place
from engine.requests import JobState
from engine.screening import ScreeningResult
from tests.support import conversation_settled, gated_runner
from tests.support import rig_conversation_options as rig_options
from tests.web.playground_support import (
    BLOCKED_PROMPT,
    HELD_PROMPT,
    Visitor,
    base_url,
    playground_settings,
    running_service,
)

pytestmark = pytest.mark.timeout(300)
JPEG = b"\xff\xd8\xff"


@pytest.fixture
async def service(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[Service]:
    async with running_service(playground_settings(tmp_path, tiny_model_dir)) as started:
        yield started


@pytest.fixture
async def ann(service: Service) -> AsyncIterator[Visitor]:
    async with Visitor(base_url(service)) as visitor:
        yield visitor


async def finished_job(service: Service, visitor: Visitor, prompt: str) -> str:
    status, _, location = await visitor.imagine(prompt)
    assert status == 303 and location.startswith("/jobs/"), status
    assert service.conversation is not None
    await conversation_settled(service.conversation)
    return location.removeprefix("/jobs/")


async def test_a_prompt_becomes_a_job_whose_page_shows_four_images_seeds_and_downloads(
    service: Service, ann: Visitor
) -> None:
    job_id = await finished_job(service, ann, "a lighthouse at dawn, oil painting")
    record = await service.engine.lookup(job_id)
    assert record is not None and record.state is JobState.DELIVERED
    assert record.request.requester.key.startswith("web:v") and record.request.requester.server_id == "playground"
    status, page = await ann.page(f"/jobs/{job_id}")
    assert status == 200
    assert page.count("<figure data-image=") == 4
    for image in record.images:
        assert f"<span data-seed>{image.seed}</span>" in page
        status, body, headers = await ann.get_bytes(f"/jobs/{job_id}/images/{image.index}.jpg?download=1")
        assert status == 200 and body.startswith(JPEG)
        assert headers["Content-Disposition"] == f'attachment; filename="imagine-{job_id[:8]}-{image.index + 1}.jpg"'
    assert f"/jobs/{job_id}" in (await ann.page("/"))[1]  # the history


async def test_refusals_are_said_plainly_and_queue_nothing(service: Service, ann: Visitor) -> None:
    cases = {
        BLOCKED_PROMPT: ({}, "aren't allowed here"),
        "a harbour": ({"seed": "forty-two"}, "seed must be a whole number between 0 and 4294967295"),
        "a harbour ": ({"seed": "99999999999"}, "seed must be between 0 and 4294967295"),
        "a harbour  ": ({"aspect": "50:1"}, "aspect must be between 1:4 and 4:1"),
        "   ": ({}, "prompt must not be empty"),
    }
    for prompt, (fields, expected) in cases.items():
        status, page, location = await ann.imagine(prompt, **fields)
        assert (status, location) == (400, ""), prompt
        assert expected in page, prompt
        assert 'role="alert" data-kind="refusal"' in page
        assert "Traceback" not in page and "Error" not in page
    assert await service.engine.active() == [] and service.engine.pipeline_calls == 0


async def test_the_rate_limit_refuses_the_third_prompt_at_once_like_in_chat(service: Service, ann: Visitor) -> None:
    assert (await ann.imagine("a quiet harbour"))[0] == 303
    assert (await ann.imagine("a quiet harbour at dusk"))[0] == 303
    status, page, _ = await ann.imagine("a quiet harbour at night")
    assert status == 400 and "You're sending prompts quickly. Try again in " in page


async def test_a_held_prompt_says_so_and_waits_in_the_history(service: Service, ann: Visitor) -> None:
    status, page, _ = await ann.imagine(HELD_PROMPT)
    assert status == 202 and "needs a quick look from a moderator" in page
    assert service.admission is not None
    (item,) = await service.admission.review.list()
    assert item.request.requester.platform == "web" and item.request.prompt == HELD_PROMPT
    assert "🕓 held" in (await ann.page("/"))[1]
    await service.admission.review.approve(item.id, "cli:operator")
    assert service.conversation is not None
    await service.conversation.process_review_decisions()
    await conversation_settled(service.conversation)
    status, page = await ann.page("/")
    assert "A moderator approved your prompt" in page  # the notice, once
    assert "🕓 held" not in page and "✅ done" in page
    assert "A moderator approved your prompt" not in (await ann.page("/"))[1]


async def test_another_session_cannot_see_or_act_on_a_job_or_its_images(service: Service, ann: Visitor) -> None:
    job_id = await finished_job(service, ann, "ann's private walrus")
    async with Visitor(base_url(service)) as bob:
        for path in (
            f"/jobs/{job_id}",
            f"/jobs/{job_id}/images/0",
            f"/jobs/{job_id}/images/0.jpg",
            f"/jobs/{job_id}/events",
        ):
            status, body, _ = await bob.get_bytes(path)
            assert status == 404, path
            assert b"walrus" not in body
        for button in (f"imagine:v:{job_id}:0", f"imagine:r:{job_id}", f"imagine:u:{job_id}:1", f"imagine:c:{job_id}"):
            status, page, _ = await bob.post("/press", {"button": button})
            assert status == 404 and "walrus" not in page, button
        assert "walrus" not in (await bob.page("/"))[1]
    async with aiohttp.ClientSession() as stranger:  # no session at all
        async with stranger.get(f"{base_url(service)}/jobs/{job_id}/images/0.jpg") as response:
            assert response.status == 404
    assert len(await service.engine.active()) == 0


async def test_state_changing_requests_need_the_token_and_this_origin(service: Service, ann: Visitor) -> None:
    forged = [
        ({"csrf_token": ""}, {}),
        ({"csrf_token": "guessed"}, {}),
        ({}, {"Origin": "http://evil.example"}),
    ]
    for form, headers in forged:
        for path, fields in (("/imagine", {"prompt": "a harbour"}), ("/press", {"button": "imagine:r:abc"})):
            status, page, _ = await ann.post(path, fields | form, **headers)
            assert status == 403 and "did not come from this site" in page, (path, form, headers)
    assert await service.engine.active() == [] and service.engine.pipeline_calls == 0


async def test_buttons_upscale_vary_and_reroll_like_chat_buttons(service: Service, ann: Visitor) -> None:
    job_id = await finished_job(service, ann, "a red fox in snow")
    status, _, location = await ann.post("/press", {"button": f"imagine:u:{job_id}:2"})
    assert (status, location) == (303, f"/jobs/{job_id}/images/2")
    status, page = await ann.page(location)
    record = await service.engine.lookup(job_id)
    assert record is not None
    assert status == 200 and f"<span data-seed>{record.images[2].seed}</span>" in page
    status, _, location = await ann.post("/press", {"button": f"imagine:v:{job_id}:2"})
    assert status == 303 and location.startswith("/jobs/") and location != f"/jobs/{job_id}"
    variation = await service.engine.lookup(location.removeprefix("/jobs/"))
    assert variation is not None and variation.request.variation is not None
    assert variation.request.variation.parent_seed == record.images[2].seed
    assert service.conversation is not None
    await conversation_settled(service.conversation)
    status, page, _ = await ann.post("/press", {"button": f"imagine:r:{job_id}"})
    assert status == 400 and "You're sending prompts quickly" in page  # the third prompt: rate-limited as in chat
    status, page, _ = await ann.post("/press", {"button": "imagine:approve:item1"})
    assert status == 403 and "Only moderators" in page
    status, page, _ = await ann.post("/press", {"button": "not-a-button"})
    assert status == 400 and "not recognised" in page


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    event, data = "", []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
        elif not line and event:
            yield event, "\n".join(data)
            event, data = "", []


async def test_the_live_stream_shows_queue_position_and_steps_then_the_images(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = playground_settings(tmp_path, tiny_model_dir)
    runner, gate = gated_runner(settings, 1)
    async with running_service(settings, runner_factory=lambda: runner) as service:
        async with Visitor(base_url(service)) as ann, Visitor(base_url(service)) as bob:
            first = (await ann.imagine("a lighthouse at dawn"))[2].removeprefix("/jobs/")
            await gate.wait_reached()  # ann's job is inside its first denoising step
            second = (await bob.imagine("a red fox in snow"))[2].removeprefix("/jobs/")
            async with bob.http.get(f"/jobs/{second}/events") as waiting:
                assert waiting.headers["Content-Type"].startswith("text/event-stream")
                assert "script-src 'self'" in waiting.headers["Content-Security-Policy"]
                stream = read_events(waiting)
                event, data = await anext(stream)
                assert event == "status" and "Queued — position 1" in data
                async with ann.http.get(f"/jobs/{first}/events") as running:
                    seen = await collect(read_events(running), release=gate.release)
                assert any("Imagining…" in data and "step 1/2" in data for event, data in seen if event == "status")
                assert seen[-1][0] == "result" and seen[-1][1].count("<figure data-image=") == 4
                rest = [pair async for pair in stream]
            assert rest[-1][0] == "result" and rest[-1][1].count("<figure data-image=") == 4


async def test_the_owner_cancels_a_running_job_from_its_page(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = playground_settings(tmp_path, tiny_model_dir)
    runner, gate = gated_runner(settings, 1)
    async with running_service(settings, runner_factory=lambda: runner) as service:
        async with Visitor(base_url(service)) as ann:
            job_id = (await ann.imagine("a lighthouse at dawn"))[2].removeprefix("/jobs/")
            await gate.wait_reached()
            page = (await ann.page(f"/jobs/{job_id}"))[1]
            assert f'value="imagine:c:{job_id}"' in page  # the Cancel button, while it runs
            status, _, location = await ann.post("/press", {"button": f"imagine:c:{job_id}"})
            assert (status, location) == (303, f"/jobs/{job_id}")
            gate.release()
            assert service.conversation is not None
            await conversation_settled(service.conversation)
            status, page = await ann.page(location)
        record = await service.engine.lookup(job_id)
    assert record is not None and record.state is JobState.CANCELLED
    assert status == 200 and "🚫 Cancelled." in page and "<figure" not in page


async def collect(stream: AsyncIterator[tuple[str, str]], release: Any) -> list[tuple[str, str]]:
    seen = [await anext(stream)]
    release()
    async for pair in stream:
        seen.append(pair)
    return seen


async def test_a_job_running_at_a_restart_finishes_and_shows_on_its_page_after_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    base = playground_settings(tmp_path, tiny_model_dir)
    settings = replace(base, web=replace(base.web, session_secret=Fernet.generate_key().decode()))
    runner, gate = gated_runner(settings, 1)
    before = Service(settings, adapters=[], runner_factory=lambda: runner, conversation_options=rig_options())
    try:
        await before.start()
        async with Visitor(base_url(before)) as ann:
            job_id = (await ann.imagine("running at the restart"))[2].removeprefix("/jobs/")
            await gate.wait_reached()
            cookies = ann.cookies
            stopping = asyncio.create_task(before.close())
            gate.release()
            await stopping
    finally:
        await before.close()
    async with running_service(settings) as after:
        assert after.conversation is not None
        await conversation_settled(after.conversation)  # resumed, finished, delivered to the playground
        record = await after.engine.lookup(job_id)
        assert record is not None and record.state is JobState.DELIVERED
        async with Visitor(base_url(after), cookies) as ann_again:  # the same browser, the same session
            status, page = await ann_again.page(f"/jobs/{job_id}")
            assert status == 200 and page.count("<figure data-image=") == 4
            assert f"/jobs/{job_id}" in (await ann_again.page("/"))[1]


async def test_withheld_images_stay_blurred_until_a_moderator_releases_them(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    def flag_everything(image: Any) -> ScreeningResult:  # the screening boundary: the detector's answer
        return ScreeningResult(True, ("FEMALE_BREAST_EXPOSED",))

    settings = playground_settings(tmp_path, tiny_model_dir)
    service = Service(settings, adapters=[], screener=flag_everything, conversation_options=rig_options())
    try:
        await service.start()
        assert service.conversation is not None and service.admission is not None
        async with Visitor(base_url(service)) as ann:
            job_id = await finished_job(service, ann, "a beach at noon")
            record = await service.engine.lookup(job_id)
            assert record is not None and all(image.withheld for image in record.images)
            page = (await ann.page(f"/jobs/{job_id}"))[1]
            assert page.count("withheld by the safety filter") == 5  # the caption and each image
            _, blurred, _ = await ann.get_bytes(f"/jobs/{job_id}/images/0.jpg")
            assert blurred == await asyncio.to_thread(Path(record.images[0].path).read_bytes)

            (item,) = await service.admission.review.list()
            await service.admission.review.approve(item.id, "cli:operator")
            await service.conversation.process_review_decisions()
            page = (await ann.page(f"/jobs/{job_id}"))[1]
            assert "withheld" not in page
            _, released, _ = await ann.get_bytes(f"/jobs/{job_id}/images/0.jpg")
            original = record.images[0].original_path
            assert original and released == await asyncio.to_thread(Path(original).read_bytes) != blurred
    finally:
        await service.close()


async def test_what_a_visitor_typed_is_shown_escaped(service: Service, ann: Visitor) -> None:
    job_id = await finished_job(service, ann, '<script>alert("hi")</script> a harbour')
    async with ann.http.get(f"/jobs/{job_id}") as response:
        raw = await response.text()
    assert "<script>alert" not in raw and "&lt;script&gt;alert" in raw


def test_place_round_trips_through_json() -> None:
    place = Place("v0123", "t1")
    assert Place.from_dict(json.loads(json.dumps(place.to_dict()))) == place
