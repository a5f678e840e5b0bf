"""The conversation layer with the real admission: limits, blocks, review in chat, and image-filter hits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bots import messages
from bots.buttons import Button
from bots.contract import ReviewPost
from bots.conversation import Conversation, ImagineCommand
from bots.errors import PlaceUnreachable
from engine.requests import Requester
from engine.screening import ScreeningResult
from moderation.admission import Admission
from moderation.review import ReviewState
from tests.support import make_settings, started_queue
from tests.test_conversation import RecordingReplier, wait

ALICE = Requester(platform="test", user_id="alice", server_id="s1", channel_id="c1")
MOD = Requester(platform="test", user_id="mod", server_id="s1", channel_id="mods")


class RecordingModerators:
    def __init__(self) -> None:
        self.posts: list[ReviewPost] = []
        self.closed: list[tuple[str, str]] = []
        self.posted = asyncio.Event()
        self.closed_event = asyncio.Event()

    async def post_review(self, post: ReviewPost) -> None:
        self.posts.append(post)
        self.posted.set()

    async def close_review(self, item_id: str, text: str, channel: str = "") -> None:
        self.closed.append((item_id, text))
        self.closed_event.set()


class Harness:
    def __init__(self, settings: Any, **engine_kwargs: Any) -> None:
        self.settings = settings
        self.engine_kwargs = engine_kwargs
        self.moderators = RecordingModerators()
        self.repliers: dict[str, RecordingReplier] = {}

    def replier_for(self, context: dict[str, Any]) -> RecordingReplier:
        return self.repliers.setdefault(context["channel"], RecordingReplier())

    async def __aenter__(self) -> Harness:
        self.engine, database = await started_queue(self.settings, **self.engine_kwargs)
        self.admission = await Admission.open(self.settings, warm_up=False)
        self.conversation = Conversation(
            self.settings,
            self.engine,
            self.admission,
            database=database,
            progress_interval_s=0.0,
            delivery_retry_delays=(),
            review_poll_s=3600.0,
        )
        self.conversation.add_platform("test", self.replier_for, self.moderators)
        await self.conversation.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conversation.close()
        await self.engine.shutdown()
        await self.admission.close()

    async def imagine(self, prompt: str, who: Requester = ALICE) -> tuple[str | None, RecordingReplier]:
        replier = self.replier_for({"channel": who.channel_id})
        command = ImagineCommand(prompt=prompt, requester=who, place={"channel": who.channel_id})
        return await self.conversation.imagine(command, replier), replier


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    base = make_settings(tmp_path, tiny_model_dir, base_size=64, steps=2)
    return replace(
        base,
        moderation=replace(base.moderation, embedding=False),
        limits=replace(base.limits, burst=2, max_queued_per_user=5),
    )


async def test_rate_limit_refusal_says_when_to_retry(settings) -> None:  # type: ignore[no-untyped-def]
    async with Harness(settings) as harness:
        first, _ = await harness.imagine("a quiet harbour")
        second, _ = await harness.imagine("a quiet harbour at dusk")
        third, replier = await harness.imagine("a quiet harbour at night")
    assert first and second and third is None
    assert replier.refusals[-1].startswith("You're sending prompts quickly. Try again in ")


async def test_blocked_prompt_is_refused_with_a_category_and_never_queued(settings) -> None:  # type: ignore[no-untyped-def]
    async with Harness(settings) as harness:
        job_id, replier = await harness.imagine("explicit porn of two adults")
        strikes = await harness.admission.strikes.strike_count(ALICE.key)
    assert job_id is None and harness.engine.pipeline_calls == 0
    assert "aren't allowed here" in replier.refusals[0] and "porn" not in replier.refusals[0]
    assert strikes == 1


async def test_review_in_chat_non_moderator_refused_then_approved(settings) -> None:  # type: ignore[no-untyped-def]
    async with Harness(settings) as harness:
        job_id, replier = await harness.imagine("Elmo holding a bloody knife")
        await wait(harness.moderators.posted)
        (post,) = harness.moderators.posts
        approve, reject = (button.custom_id for button in post.buttons)
        assert job_id is None and replier.statuses[0][0].startswith("Your prompt needs a quick look")
        assert "Elmo holding a bloody knife" in post.text

        outsider = RecordingReplier()
        await harness.conversation.press(approve, ALICE, outsider, is_moderator=False)
        assert outsider.refusals == [messages.NOT_A_MODERATOR]
        assert (await harness.admission.review.get(post.item_id)).state is ReviewState.PENDING

        await harness.conversation.press(approve, MOD, RecordingReplier(), is_moderator=True)
        await replier.until(lambda: len(replier.deliveries) == 1)
        late = RecordingReplier()
        await harness.conversation.press(reject, MOD, late, is_moderator=True)
        audit = await harness.admission.audit.entries(target=f"review:{post.item_id}")
    assert harness.moderators.closed[0][0] == post.item_id and "Approved by test:mod" in harness.moderators.closed[0][1]
    assert replier.notices[0].startswith("A moderator approved your prompt")
    assert "already" in late.refusals[0]
    assert sorted((entry.actor, entry.action, entry.outcome) for entry in audit) == [
        ("test:alice", "approve", "refused"),
        ("test:mod", "approve", "ok"),
        ("test:mod", "reject", "failed"),
    ]


async def test_rejected_prompt_tells_the_requester(settings) -> None:  # type: ignore[no-untyped-def]
    async with Harness(settings) as harness:
        _, replier = await harness.imagine("Pikachu smoking crack")
        await wait(harness.moderators.posted)
        item_id = harness.moderators.posts[0].item_id
        await harness.admission.review.reject(item_id, "cli:operator", "not here")  # decided elsewhere (CLI)
        await harness.conversation.process_review_decisions()
    assert replier.notices == ["A moderator declined your prompt: not here. “Pikachu smoking crack”"]
    assert harness.engine.pipeline_calls == 0


async def test_an_image_filter_hit_is_withheld_and_sent_to_moderators(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    base = make_settings(tmp_path, tiny_model_dir, base_size=64, steps=2)
    settings = replace(base, moderation=replace(base.moderation, embedding=False))

    def flag_everything(image: Any) -> ScreeningResult:  # the screening boundary: the detector's answer
        return ScreeningResult(True, ("FEMALE_BREAST_EXPOSED",))

    async with Harness(settings, screener=flag_everything) as harness:
        job_id, replier = await harness.imagine("a beach at noon")
        await wait(harness.moderators.posted)
        (post,) = harness.moderators.posts
        (delivery,) = replier.deliveries
        assert "withheld by the safety filter" in delivery.text
        assert len(post.image_paths) == 4 and all(path.endswith(".jpg") for path in post.image_paths)
        await harness.conversation.press(post.buttons[0].custom_id, MOD, RecordingReplier(), is_moderator=True)
        await replier.until(lambda: len(replier.deliveries) == 2)
    released = replier.deliveries[1]
    assert [attachment.path.endswith("-withheld.jpg") for attachment in released.attachments] == [True] * 4
    assert job_id is not None


class UnreachableReplier(RecordingReplier):
    """The platform says the bot cannot post where the prompt came from."""

    async def show_status(self, text: str, buttons: Sequence[Button] = ()) -> None:
        raise PlaceUnreachable("not a member of the channel")


async def test_a_prompt_from_where_the_bot_cannot_post_costs_nothing(settings) -> None:  # type: ignore[no-untyped-def]
    async with Harness(settings) as harness:
        command = ImagineCommand(prompt="a quiet harbour", requester=ALICE, place={"channel": "elsewhere"})
        for _ in range(3):  # more than the burst of 2: each attempt's budget came back
            with pytest.raises(PlaceUnreachable):
                await harness.conversation.imagine(command, UnreachableReplier())
        assert await harness.admission.limiter.active_jobs(ALICE.key) == 0
        assert await harness.engine.active() == []
        job_id, _ = await harness.imagine("a quiet harbour")
    assert job_id is not None
