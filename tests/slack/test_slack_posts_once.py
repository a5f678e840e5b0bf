"""Slack answering a post with a server error: before making it (plain 500) or after (a lost response, the post
made all the same). Every post is retried, and shows exactly once: the status message, the images, the buttons
message, a review post, a note to the requester."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bots import messages
from moderation.admission import Admission
from tests.moderation_support import reuse_loaded_model
from tests.redis_support import eventually
from tests.slack_harness import MODERATOR_CHANNEL, SlackRig, slack_settings, start_rig
from tests.standins.slack_server import JsonDict, PostedMessage, SlackStandIn
from tests.support import conversation_settled

pytestmark = pytest.mark.timeout(300)
CHANNEL = "CGENERAL"
HELD_PROMPT = "a nude woman lying on a bed"
LOST_OR_NOT = pytest.mark.parametrize("commit", [True, False], ids=["500-after-posting", "500-before-posting"])


def with_buttons(prefix: str) -> Callable[[JsonDict], bool]:
    """Matches a chat.postMessage whose blocks carry a button `prefix...` (imagine:u: for the images' buttons)."""
    return lambda args: f'"action_id": "{prefix}' in json.dumps(args.get("blocks"))


def top_level(standin: SlackStandIn, channel: str) -> list[PostedMessage]:
    return [m for m in standin.messages.values() if m.channel == channel and m.thread_ts is None]


def buttons_messages(standin: SlackStandIn) -> list[PostedMessage]:
    return [m for m in standin.messages.values() if with_buttons("imagine:u:")({"blocks": m.blocks})]


async def generate(rig: SlackRig, prompt: str) -> PostedMessage:
    """A slash command in CHANNEL, followed to its end; its status message."""
    await rig.sender.post(rig.sender.slash_command(prompt, channel_id=CHANNEL))
    status = await rig.message_saying(messages.DONE)
    await conversation_settled(rig.conversation)
    return status


def assert_delivered_once(standin: SlackStandIn, status: PostedMessage) -> None:
    """One status message in the channel; in its thread, one share of the four images and one buttons message."""
    assert top_level(standin, CHANNEL) == [status]
    (upload,) = standin.completed
    assert (upload.channel_id, upload.thread_ts, len(upload.files)) == (CHANNEL, status.ts, 4)
    assert [len(m.files) for m in standin.file_messages.values()] == [4]
    (buttons,) = buttons_messages(standin)
    assert buttons.thread_ts == status.ts


@LOST_OR_NOT
async def test_the_status_message_is_posted_once(commit: bool, tmp_path: Path, tiny_model_dir: Path) -> None:
    async with SlackStandIn() as standin:
        rig = await start_rig(slack_settings(tmp_path, tiny_model_dir, standin), standin)
        try:
            standin.fail("chat.postMessage", 500, commit=commit)  # the first post: the status message
            status = await generate(rig, "a patient heron")
        finally:
            await rig.stop()
        assert_delivered_once(standin, status)
        tries = [c for c in standin.calls_to("chat.postMessage") if c.args.get("thread_ts") is None]
        # After a lost response the retry found the message instead of posting it again.
        assert [c.status for c in tries] == ([500] if commit else [500, 200])
        assert tries[0].args["metadata"]["event_type"] == "imagine_post"
        assert all(c.args["metadata"] == tries[0].args["metadata"] for c in tries)  # one post, tried again
        (looked,) = standin.calls_to("conversations.history")
        assert (looked.args["channel"], looked.args["include_all_metadata"]) == (CHANNEL, "1")


@LOST_OR_NOT
async def test_the_images_are_uploaded_and_shared_once(commit: bool, tmp_path: Path, tiny_model_dir: Path) -> None:
    async with SlackStandIn() as standin:
        rig = await start_rig(slack_settings(tmp_path, tiny_model_dir, standin), standin)
        try:
            standin.fail("files.completeUploadExternal", 500, commit=commit)
            status = await generate(rig, "a patient fox")
        finally:
            await rig.stop()
        assert_delivered_once(standin, status)
        completions = standin.calls_to("files.completeUploadExternal")
        assert [c.status for c in completions] == ([500] if commit else [500, 200])
        assert len({c.args["files"] for c in completions}) == 1  # the same staged files, completed again
        assert len(standin.calls_to("files.getUploadURLExternal")) == 4  # the bytes went up once
        assert standin.calls_to("conversations.replies")[0].args["ts"] == status.ts  # it looked in the thread


@LOST_OR_NOT
async def test_the_buttons_message_is_posted_once(commit: bool, tmp_path: Path, tiny_model_dir: Path) -> None:
    async with SlackStandIn() as standin:
        rig = await start_rig(slack_settings(tmp_path, tiny_model_dir, standin), standin)
        try:
            standin.fail("chat.postMessage", 500, commit=commit, matching=with_buttons("imagine:u:"))
            status = await generate(rig, "a patient owl")
            assert await rig.engine.undelivered("slack") == []
        finally:
            await rig.stop()
        assert_delivered_once(standin, status)
        posts = [c for c in standin.calls_to("chat.postMessage") if with_buttons("imagine:u:")(c.args)]
        assert [c.status for c in posts] == ([500] if commit else [500, 200])


def review_posts(standin: SlackStandIn) -> list[PostedMessage]:
    return top_level(standin, MODERATOR_CHANNEL)


@LOST_OR_NOT
async def test_a_review_post_and_the_note_of_its_decision_are_posted_once(
    commit: bool, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reuse_loaded_model(monkeypatch)
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin)
        rig = await start_rig(settings, standin, admission=await Admission.open(settings))
        try:
            standin.fail("chat.postMessage", 500, commit=commit, matching=lambda a: a["channel"] == MODERATOR_CHANNEL)
            await rig.sender.post(rig.sender.slash_command(HELD_PROMPT, user_id="UCAROL", channel_id=CHANNEL))
            (held,) = await standin.wait_for(lambda: review_posts(standin) or None)
            assert HELD_PROMPT in held.text and rig.admission is not None
            (item,) = await rig.admission.review.list()

            declined = "declined your prompt"
            standin.fail("chat.postMessage", 500, commit=commit, matching=lambda a: declined in str(a.get("text")))
            await rig.admission.review.reject(item.id, "cli:alice", "not here")  # as `imagine review reject`
            await rig.conversation.process_review_decisions()
            told = await rig.message_saying(declined)
            await standin.wait_for(lambda: held.edits == 1)
        finally:
            await rig.stop()
        assert review_posts(standin) == [held]
        notes = [m for m in standin.messages.values() if declined in m.text]
        assert notes == [told] and (told.channel, told.text.startswith("<@UCAROL>")) == (CHANNEL, True)
        to_moderators = [c for c in standin.calls_to("chat.postMessage") if c.args["channel"] == MODERATOR_CHANNEL]
        assert [c.status for c in to_moderators] == ([500] if commit else [500, 200])


async def test_a_review_post_that_fails_past_its_retries_is_posted_later_once(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack fails every try the adapter makes of a review post: the review desk keeps it and posts it again
    later (looking first), and it is in the moderators' channel once."""
    reuse_loaded_model(monkeypatch)
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin)
        rig = await start_rig(settings, standin, admission=await Admission.open(settings), review_poll_s=0.2)
        try:
            to_moderators = lambda a: a["channel"] == MODERATOR_CHANNEL  # noqa: E731
            standin.fail("chat.postMessage", 500, times=4, matching=to_moderators)  # every try of the first call
            await rig.sender.post(rig.sender.slash_command(HELD_PROMPT, user_id="UCAROL", channel_id=CHANNEL))
            await rig.message_saying("needs a quick look from a moderator")
            (held,) = await standin.wait_for(lambda: review_posts(standin) or None)
        finally:
            await rig.stop()
        assert HELD_PROMPT in held.text and review_posts(standin) == [held]
        posts = [c.status for c in standin.calls_to("chat.postMessage") if to_moderators(c.args)]
        assert posts == [500, 500, 500, 500, 200]
        assert len(standin.calls_to("conversations.history")) == 4  # it looked before each retry


async def test_a_review_post_a_previous_run_never_made_is_posted_after_the_restart(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack fails every try of one review post, and the service stops before trying again: the next start posts
    it, once, and does not post again the one that was made before the restart."""
    reuse_loaded_model(monkeypatch)
    to_moderators = lambda a: a["channel"] == MODERATOR_CHANNEL  # noqa: E731
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin)
        rig = await start_rig(settings, standin, admission=await Admission.open(settings))  # polls once an hour
        try:
            await rig.sender.post(rig.sender.slash_command(HELD_PROMPT, user_id="UDAVE", channel_id=CHANNEL))
            (made,) = await standin.wait_for(lambda: review_posts(standin) or None)
            standin.fail("chat.postMessage", 500, times=4, matching=to_moderators)  # every try of the next one
            await rig.sender.post(rig.sender.slash_command(HELD_PROMPT, user_id="UCAROL", channel_id=CHANNEL))
            await standin.wait_for(lambda: len(failed_posts(standin, to_moderators)) == 4 or None)
            await rig.settled()
        finally:
            await rig.stop()
        assert review_posts(standin) == [made]

        rig = await start_rig(settings, standin, admission=await Admission.open(settings), review_poll_s=0.2)
        try:
            (_, reposted) = await standin.wait_for(lambda: review_posts(standin)[1:] and review_posts(standin))
            assert rig.admission is not None
            pending = await rig.admission.review.list()
        finally:
            await rig.stop()
        assert review_posts(standin) == [made, reposted]
        assert "user UDAVE" in made.text and "user UCAROL" in reposted.text and HELD_PROMPT in reposted.text
        assert len(pending) == 2  # both still wait for a moderator, now with a post each


async def test_a_review_post_a_dead_process_never_made_is_made_once_by_a_process_sharing_its_store(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two frontends on one store. Every try of a review post from the first fails, and it stops renewing the
    post's lease (it polls once an hour: as good as dead). The second, running all along, takes the post over once
    the lease has run out and makes it, once, however often it polls after."""
    reuse_loaded_model(monkeypatch)
    to_moderators = lambda a: a["channel"] == MODERATOR_CHANNEL  # noqa: E731
    lease_s = 6.0  # longer than the first frontend's own tries (0.5 + 1 + 2 s apart)
    async with SlackStandIn() as standin:
        settings = slack_settings(tmp_path, tiny_model_dir, standin)
        rigs: list[SlackRig] = []
        try:
            for poll_s in (3600.0, 0.1):
                admission = await Admission.open(settings)
                rigs.append(
                    await start_rig(
                        settings, standin, admission=admission, review_poll_s=poll_s, review_post_lease_s=lease_s
                    )
                )
            dying, other = rigs
            standin.fail("chat.postMessage", 500, times=4, matching=to_moderators)
            await dying.sender.post(dying.sender.slash_command(HELD_PROMPT, user_id="UCAROL", channel_id=CHANNEL))
            await standin.wait_for(lambda: len(failed_posts(standin, to_moderators)) == 4 or None)
            (reposted,) = await standin.wait_for(lambda: review_posts(standin) or None, within=60)
            await polled(other, rounds=5)  # more chances to post it again
        finally:
            for rig in rigs:
                await rig.stop()
        assert review_posts(standin) == [reposted] and "user UCAROL" in reposted.text
        assert len(failed_posts(standin, to_moderators)) == 4


async def polled(rig: SlackRig, rounds: int) -> None:
    """Wait until the rig's review poller has gone round `rounds` more times."""
    target = rig.conversation.review_polls + rounds
    await eventually(lambda: rig.conversation.review_polls >= target, what=f"{rounds} review polls")


def failed_posts(standin: SlackStandIn, matching: Callable[[JsonDict], bool]) -> list[object]:
    return [c for c in standin.calls_to("chat.postMessage") if matching(c.args) and c.status == 500]
