"""The platform-neutral conversation layer against the real engine; the adapter boundary is a recording Replier."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bots import messages
from bots.buttons import Action, Button
from bots.contract import Delivery, ReplyContext
from bots.conversation import Conversation, ImagineCommand
from engine.local import LocalJobQueue
from engine.requests import JobState, Requester
from storage.deliveries import Deliveries, DeliveryState
from tests.support import conversation_settled, gated_runner, make_settings, started_queue

ALICE = Requester(platform="test", user_id="alice", channel_id="c1")
BOB = Requester(platform="test", user_id="bob", channel_id="c1")


class RecordingReplier:
    """Stands in for an adapter: records what the conversation asked it to show."""

    def __init__(self, fail_deliveries: int = 0) -> None:
        self.statuses: list[tuple[str, tuple[str, ...]]] = []
        self.refusals: list[str] = []
        self.notices: list[str] = []
        self.deliveries: list[Delivery] = []
        self.fail_deliveries = fail_deliveries
        self.delivered = asyncio.Event()
        self.refused = asyncio.Event()
        self.changed = asyncio.Event()

    async def until(self, predicate: Any) -> None:
        """Wait, without sleeping, until `predicate()` holds; every recorded call re-checks it."""
        while not predicate():
            self.changed.clear()
            await wait(self.changed)

    def finished_status(self) -> bool:
        return bool(self.statuses) and self.statuses[-1][0].startswith((messages.DONE, messages.CANCELLED, "⚠️"))

    async def show_status(self, text: str, buttons: Sequence[Button] = ()) -> None:
        self.statuses.append((text, tuple(button.custom_id for button in buttons)))
        self.changed.set()

    async def refuse(self, text: str) -> None:
        self.refusals.append(text)
        self.refused.set()

    async def deliver(self, delivery: Delivery) -> None:
        if self.fail_deliveries:
            self.fail_deliveries -= 1
            raise ConnectionError("HTTP 500 from the platform")
        self.deliveries.append(delivery)
        self.delivered.set()
        self.changed.set()

    async def notify(self, text: str) -> None:
        self.notices.append(text)

    def journal_place(self) -> dict[str, Any] | None:
        return None


def all_files(paths: Any) -> bool:
    return all(Path(path).is_file() for path in paths)


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), timeout=120)


def command(prompt: str, who: Requester = ALICE, **fields: Any) -> ImagineCommand:
    return ImagineCommand(prompt=prompt, requester=who, place={"channel": who.channel_id}, **fields)


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, tiny_model_dir, base_size=64, steps=2)


async def running(  # type: ignore[no-untyped-def]
    settings, conversation_options: dict[str, Any] | None = None, **engine_kwargs: Any
) -> tuple[LocalJobQueue, Conversation]:
    """A started queue and a conversation on its database: every status shown, retries at once (unless
    `conversation_options` says otherwise)."""
    engine, database = await started_queue(settings, **engine_kwargs)
    options = {"progress_interval_s": 0.0, "delivery_retry_delays": (0.0, 0.0)} | (conversation_options or {})
    return engine, Conversation(settings, engine, database=database, **options)


async def stop(engine: LocalJobQueue, conversation: Conversation) -> None:
    await conversation.close()
    await engine.shutdown()


async def test_imagine_shows_progress_then_delivers_four_images_with_buttons(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings)
    replier = RecordingReplier()
    try:
        job_id = await conversation.imagine(command("a red fox in snow", seed=3), replier)
        await replier.until(replier.finished_status)
        record = await engine.lookup(job_id)  # type: ignore[arg-type]
    finally:
        await stop(engine, conversation)
    (delivery,) = replier.deliveries
    assert len(delivery.attachments) == 4 and all_files(a.path for a in delivery.attachments)
    assert [len(row) for row in delivery.button_rows] == [4, 4, 2]  # 🔄 and Delete
    assert delivery.button_rows[0][0].custom_id == f"imagine:u:{job_id}:0"
    assert "a red fox in snow" in delivery.text and "seeds 3–6" in delivery.text
    texts = [text for text, _ in replier.statuses]
    assert texts[0].startswith("⏳ Queued — position 1")
    assert any(text.startswith("🎨 Imagining… 100% (step 2/2)") for text in texts)
    assert texts[-1].startswith(messages.DONE)
    assert replier.statuses[0][1] == (f"imagine:c:{job_id}",)  # a cancel button while it waits
    assert replier.statuses[-1][1] == ()  # and none once done
    assert record is not None and record.state is JobState.DELIVERED


async def test_a_throttled_status_only_changes_once_per_interval(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings, {"progress_interval_s": 3600.0, "delivery_retry_delays": ()})
    replier = RecordingReplier()
    try:
        await conversation.imagine(command("slow edits"), replier)
        await wait(replier.delivered)
    finally:
        await stop(engine, conversation)
    assert [text[:1] for text, _ in replier.statuses] == ["⏳"]  # the final edit waits out the interval; closed


async def test_bad_input_is_refused_and_changes_nothing(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings)
    replier = RecordingReplier()
    try:
        assert await conversation.imagine(command("\u200b \u200b"), replier) is None
        assert await conversation.imagine(command("x" * 5000), replier) is None
        assert await conversation.imagine(command("a cat", aspect="50:1"), replier) is None
    finally:
        await stop(engine, conversation)
    assert replier.refusals == [
        "I can't use that request: prompt must not be empty.",
        "I can't use that request: prompt is too long: 5000 characters, the limit is 1000.",
        "I can't use that request: aspect must be between 1:4 and 4:1, got '50:1'.",
    ]
    assert engine.pipeline_calls == 0 and not replier.statuses


async def test_only_the_requester_can_cancel(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir, base_size=64, steps=2)
    runner, gate = gated_runner(settings)
    engine, conversation = await running(settings, runner_factory=lambda: runner)
    alices, bobs = RecordingReplier(), RecordingReplier()
    try:
        job_id = await conversation.imagine(command("cancel me"), alices)
        await gate.wait_reached()
        await conversation.press(f"imagine:c:{job_id}", BOB, bobs)
        assert bobs.refusals == [messages.NOT_YOURS_TO_CANCEL]
        await conversation.press(f"imagine:c:{job_id}", ALICE, alices)
        gate.release()
        job = engine.get(job_id)
        assert job is not None
        async for _ in job.events():
            pass
        await conversation.press(f"imagine:c:{job_id}", ALICE, alices)
        await conversation.press("imagine:c:nonsense:x", ALICE, alices)
        await conversation.press("someone-elses-button", ALICE, alices)
    finally:
        await stop(engine, conversation)
    assert job.state is JobState.CANCELLED
    assert alices.refusals == [messages.ALREADY_FINISHED, messages.UNKNOWN_BUTTON, messages.UNKNOWN_BUTTON]
    assert not alices.deliveries


async def test_upscale_variation_and_reroll_buttons(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings)
    first = RecordingReplier()
    try:
        job_id = await conversation.imagine(command("a lighthouse", seed=10), first)
        await wait(first.delivered)
        upscale, variation, reroll = RecordingReplier(), RecordingReplier(), RecordingReplier()
        await conversation.press(f"imagine:u:{job_id}:2", BOB, upscale)
        await conversation.press(f"imagine:v:{job_id}:1", BOB, variation)
        await conversation.press(f"imagine:r:{job_id}", BOB, reroll)
        await conversation.press(f"imagine:u:{job_id}:9", BOB, upscale)
        await wait(variation.delivered)
        await wait(reroll.delivered)
        variation_record = await engine.lookup(variation.deliveries[0].job_id)
        reroll_record = await engine.lookup(reroll.deliveries[0].job_id)
    finally:
        await stop(engine, conversation)
    (single,) = upscale.deliveries
    assert len(single.attachments) == 1 and single.attachments[0].path.endswith(f"{job_id}-2.jpg")
    assert "seed 12" in single.text
    assert upscale.refusals == [messages.UNKNOWN_BUTTON]
    assert variation_record is not None and reroll_record is not None
    assert variation_record.request.variation is not None and variation_record.request.variation.parent_seed == 11
    assert variation_record.request.requester == BOB and variation_record.request.prompt == "a lighthouse"
    assert reroll_record.request.variation is None and reroll_record.seeds[0] != 10


async def test_a_failed_post_is_retried_and_delivered_once(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings)
    replier = RecordingReplier(fail_deliveries=1)
    try:
        job_id = await conversation.imagine(command("flaky platform"), replier)
        await replier.until(replier.finished_status)
        assert await engine.undelivered() == []
    finally:
        await stop(engine, conversation)
    assert [delivery.job_id for delivery in replier.deliveries] == [job_id]


async def test_after_a_restart_jobs_resume_and_results_are_delivered_exactly_once(tmp_path, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, tiny_model_dir, base_size=64, steps=2)
    runner, gate = gated_runner(settings)
    engine, conversation = await running(settings, runner_factory=lambda: runner)
    before = RecordingReplier(fail_deliveries=99)  # this adapter dies before it can post anything
    running_id = await conversation.imagine(command("running at the restart"), before)
    await gate.wait_reached()
    queued_id = await conversation.imagine(command("queued at the restart", BOB), before)
    await conversation.close()
    stopping = asyncio.create_task(engine.shutdown(drain=False))
    gate.release()
    await stopping

    after: dict[str, RecordingReplier] = {}

    def replier_for(context: dict[str, Any]) -> RecordingReplier:
        return after.setdefault(context["channel"], RecordingReplier())

    engine, conversation = await running(settings)
    conversation.add_platform("test", replier_for)
    try:
        await conversation.start()
        replier = after["c1"]
        await replier.until(lambda: sum(text.startswith(messages.DONE) for text, _ in replier.statuses) == 2)
        assert await engine.undelivered() == []
    finally:
        await stop(engine, conversation)
    assert sorted(delivery.job_id for delivery in replier.deliveries) == sorted([running_id, queued_id])
    assert not before.deliveries

    # a third start finds nothing left to do
    engine, conversation = await running(settings)
    conversation.add_platform("test", replier_for)
    try:
        await conversation.start()
        assert await engine.active() == [] and await engine.undelivered() == []
    finally:
        await stop(engine, conversation)
    assert len(replier.deliveries) == 2
    assert Action.UPSCALE.value == "u"


class PlacedReplier(RecordingReplier):
    """A replier whose context names the status message once it has posted one (as the Slack adapter's does)."""

    def __init__(self) -> None:
        super().__init__()
        self.place: dict[str, Any] = {"channel": "c1"}

    def journal_place(self) -> dict[str, Any]:
        return self.place

    async def show_status(self, text: str, buttons: Sequence[Button] = ()) -> None:
        self.place = {"channel": "c1", "status_message": "m-1"}
        await super().show_status(text, buttons)


async def test_the_status_message_is_journaled_so_a_restart_edits_it(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings)
    replier = PlacedReplier()
    try:
        job_id = await conversation.imagine(command("remember where"), replier)
        assert job_id is not None
        record = await engine.lookup(job_id)
        await replier.until(replier.finished_status)
    finally:
        await stop(engine, conversation)
    assert record is not None
    assert ReplyContext.from_dict(record.request.delivery).place == {"channel": "c1", "status_message": "m-1"}


async def test_a_result_finished_but_never_delivered_is_delivered_after_restart(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings)
    unreachable = RecordingReplier(fail_deliveries=99)  # the platform was down until the restart
    job_id = await conversation.imagine(command("delivered later"), unreachable)
    await unreachable.until(lambda: bool(unreachable.statuses) and unreachable.statuses[-1][0].startswith("⚠️"))
    await stop(engine, conversation)
    assert not unreachable.deliveries
    assert unreachable.statuses[-1][0].startswith("⚠️ Your images are ready, but I couldn't post them yet.")

    later = RecordingReplier()
    engine, conversation = await running(settings)
    conversation.add_platform("test", lambda context: later)
    try:
        await conversation.start()
        await later.until(later.finished_status)
        assert await engine.undelivered() == []
    finally:
        await stop(engine, conversation)
    assert [delivery.job_id for delivery in later.deliveries] == [job_id]
    assert later.statuses == [(f"{messages.DONE} “delivered later”", ())]


async def test_a_result_that_could_not_be_posted_follows_without_a_restart(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings, {"redelivery_interval_s": 0.05})
    flaky = RecordingReplier(fail_deliveries=4)  # the follower's three tries fail, then the first sweep's first
    conversation.add_platform("test", lambda context: flaky)
    await conversation.start()
    try:
        job_id = await conversation.imagine(command("posted later"), flaky)
        await flaky.until(lambda: bool(flaky.deliveries) and flaky.statuses[-1][0].startswith(messages.DONE))
        assert await engine.undelivered() == []
        await conversation.redeliver_undelivered()  # a later sweep finds nothing to do
    finally:
        await stop(engine, conversation)
    assert [delivery.job_id for delivery in flaky.deliveries] == [job_id]
    assert any(text.startswith("⚠️ Your images are ready") for text, _ in flaky.statuses)


class HeldReplier(RecordingReplier):
    """Its first post waits until the test lets it through."""

    def __init__(self) -> None:
        super().__init__()
        self.posting = asyncio.Event()
        self.let_through = asyncio.Event()

    async def deliver(self, delivery: Delivery) -> None:
        self.posting.set()
        await self.let_through.wait()
        await super().deliver(delivery)


async def test_a_sweep_leaves_a_result_its_follower_is_posting(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings)
    held = HeldReplier()
    conversation.add_platform("test", lambda context: held)
    try:
        job_id = await conversation.imagine(command("posted once"), held)
        await wait(held.posting)
        assert [record.id for record in await engine.undelivered()] == [job_id]  # finished, not yet delivered
        await conversation.redeliver_undelivered()
        held.let_through.set()
        await held.until(held.finished_status)
        await conversation.redeliver_undelivered()
    finally:
        await stop(engine, conversation)
    assert [delivery.job_id for delivery in held.deliveries] == [job_id]


async def test_a_post_that_keeps_failing_is_tried_ever_less_often(settings) -> None:  # type: ignore[no-untyped-def]
    engine, conversation = await running(settings, {"redelivery_interval_s": 3600.0})  # sweeps called by hand
    gone = RecordingReplier(fail_deliveries=99)  # e.g. the bot was removed from the channel
    attempts = lambda: 99 - gone.fail_deliveries  # noqa: E731
    conversation.add_platform("test", lambda context: gone)
    await conversation.start()
    try:
        await conversation.imagine(command("nowhere to post"), gone)
        await gone.until(lambda: bool(gone.statuses) and gone.statuses[-1][0].startswith("⚠️"))
        assert attempts() == 3  # the follower's try and two retries
        await conversation.redeliver_undelivered()
        await conversation_settled(conversation)
        assert attempts() == 6
        await conversation.redeliver_undelivered()  # too soon after a failed sweep: left alone
        await conversation_settled(conversation)
        assert attempts() == 6 and await engine.undelivered() != []
    finally:
        await stop(engine, conversation)


async def test_two_chat_processes_sweeping_at_once_post_a_result_once(settings) -> None:  # type: ignore[no-untyped-def]
    """Delivery claims live in the database: two conversations on one database (two chat processes) race their
    sweeps for a result neither has posted, and exactly one posts it."""
    engine, database = await started_queue(settings)
    first = Conversation(settings, engine, database=database, progress_interval_s=0.0, delivery_retry_delays=())
    second = Conversation(settings, engine, database=database, progress_interval_s=0.0, delivery_retry_delays=())
    unreachable = RecordingReplier(fail_deliveries=1)
    posted = RecordingReplier()
    for conversation in (first, second):
        conversation.add_platform("test", lambda context: posted)
    try:
        job_id = await first.imagine(command("one post only"), unreachable)
        await unreachable.until(unreachable.finished_status)  # its follower failed: finished, undelivered
        for _ in range(3):
            await asyncio.gather(first.redeliver_undelivered(), second.redeliver_undelivered())
            await asyncio.gather(conversation_settled(first), conversation_settled(second))
        record = await engine.lookup(job_id)  # type: ignore[arg-type]
    finally:
        await first.close()
        await second.close()
        await engine.shutdown()
    assert [delivery.job_id for delivery in posted.deliveries] == [job_id]
    assert record is not None and record.state is JobState.DELIVERED


async def test_a_result_that_cannot_be_posted_for_long_is_given_up_and_its_requester_told(settings) -> None:  # type: ignore[no-untyped-def]
    """After service.delivery_give_up_s of failing posts (here: at once), the sweep stops trying, records why,
    and tells the requester another way (Replier.notify: an ephemeral note or a DM)."""
    settings = replace(settings, service=replace(settings.service, delivery_give_up_s=1e-6))
    engine, database = await started_queue(settings)
    conversation = Conversation(
        settings,
        engine,
        database=database,
        progress_interval_s=0.0,
        delivery_retry_delays=(),
        redelivery_interval_s=3600.0,
    )
    gone = RecordingReplier(fail_deliveries=99)
    conversation.add_platform("test", lambda context: gone)
    try:
        job_id = await conversation.imagine(command("a channel that was deleted"), gone)
        await gone.until(lambda: bool(gone.statuses) and gone.statuses[-1][0].startswith("⚠️"))
        for _ in range(2):  # the first sweep gives up; the second finds nothing to try
            await conversation.redeliver_undelivered()
            await conversation_settled(conversation)
        delivery = await Deliveries(database).get(job_id)  # type: ignore[arg-type]
    finally:
        await stop(engine, conversation)
    assert 99 - gone.fail_deliveries == 2  # the follower's try, then the sweep's: none after giving up
    assert gone.notices == [messages.delivery_given_up("a channel that was deleted")]
    assert delivery is not None and delivery.state is DeliveryState.FAILED
    assert delivery.last_error == "ConnectionError: HTTP 500 from the platform"
