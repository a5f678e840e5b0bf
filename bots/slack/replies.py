"""The conversation layer's `Replier` and `ModeratorChannel`, spoken as Slack Web API calls.

Where a conversation lives is a `SlackPlace` (channel, requester, thread, status message), journaled with the job
as its JSON `delivery` context, so that `SlackPlace.from_context(...)` rebuilds the same replier after a restart.

In a channel the status message is posted in the channel (or in the thread the user spoke in) and the images go
into its thread; in a direct message both go straight into the DM. Images travel in ONE upload (one
`files.completeUploadExternal` for all four), then a message with the buttons follows. Every post goes through
bots/slack/posting.py: retried when Slack fails, and made once even when Slack's answer is lost.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bots.buttons import Button
from bots.contract import Delivery, ReviewPost
from bots.errors import PlaceUnreachable
from bots.slack import blocks
from bots.slack.posting import FileToUpload, OncePoster, Place, PostLog, post_key

log = logging.getLogger(__name__)
OUTSIDE_CHANNEL_ERRORS = frozenset({"not_in_channel", "channel_not_found"})
HISTORY_SCAN_LIMIT = 200
"""How many recent messages of the moderators' channel are searched for a review message after a restart."""


@dataclass
class SlackPlace:
    """Where one requester's conversation happens. JSON-able through `to_context()`."""

    channel: str
    user: str
    thread_ts: str | None = None
    """The thread the requester spoke in (a mention in a thread, a button clicked in a thread), if any."""
    status_ts: str | None = None
    """Our status message, once posted."""
    uploaded: list[str] = field(default_factory=list)
    """Jobs whose images are already posted here: a retry of a delivery whose buttons failed, even by a
    rebuilt replier after a restart or in a redelivery sweep, posts only the buttons, not the images again."""
    files: dict[str, list[str]] = field(default_factory=dict)
    """The Slack file ids of each job's uploaded images: the Delete button carries them (its `value`)."""
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Names this place's posts (their metadata), so that a retry finds what an earlier try posted."""
    posts: PostLog = field(default_factory=PostLog)
    """Posts that may have been made without our knowing (their answer was lost), and staged uploads."""

    @property
    def is_direct_message(self) -> bool:
        return self.channel.startswith("D")

    @property
    def reply_thread(self) -> str | None:
        """Where results go: the existing thread, else the status message's thread; none in a DM."""
        if self.thread_ts:
            return self.thread_ts
        return None if self.is_direct_message else self.status_ts

    def to_context(self) -> dict[str, Any]:
        return {"platform": "slack", **asdict(self), "posts": self.posts.to_dict()}

    @classmethod
    def from_context(cls, context: dict[str, Any]) -> SlackPlace:
        try:
            return cls(
                channel=str(context["channel"]),
                user=str(context["user"]),
                thread_ts=_optional_str(context.get("thread_ts")),
                status_ts=_optional_str(context.get("status_ts")),
                uploaded=[str(job_id) for job_id in context.get("uploaded") or []],
                files={str(job): [str(f) for f in ids] for job, ids in (context.get("files") or {}).items()},
                key=str(context.get("key") or uuid.uuid4().hex),  # places journaled before keys: a fresh one
                posts=PostLog.from_dict(context.get("posts")),
            )
        except KeyError as missing:
            needed = missing.args[0]
            raise ValueError(f"a Slack delivery context needs {needed!r}, got keys {sorted(context)}") from None


@dataclass(frozen=True)
class PressedMessage:
    """The message a button was clicked on, and the files its Delete button's value names."""

    ts: str
    file_ids: tuple[str, ...] = ()


class SlackReplier:
    """One conversation with one requester. Calls are serialised: a status edit never races the delivery."""

    def __init__(
        self,
        client: AsyncWebClient,
        place: SlackPlace,
        response_url: str | None = None,
        pressed: PressedMessage | None = None,
    ) -> None:
        self.client = client
        self.place = place
        self.pressed = pressed
        self.response_url = response_url
        """A slash command's reply URL (valid 30 min, not journaled): the only way to answer in a channel the
        bot is not a member of."""
        self._lock = asyncio.Lock()
        self._buttons_posted: set[str] = set()
        self._poster = OncePoster(client, place.posts)

    def journal_place(self) -> dict[str, Any]:
        return self.place.to_context()

    async def show_status(self, text: str, buttons: Sequence[Button] = ()) -> None:
        rows = (tuple(buttons),) if buttons else ()
        async with self._lock:
            if self.place.status_ts is not None and await self._edit_status(text, rows):
                return
            try:
                self.place.status_ts = await self._poster.post_message(
                    post_key("status", self.place.key),
                    Place(self.place.channel, self.place.thread_ts),
                    text=blocks.fallback_text(text),
                    blocks=blocks.message_blocks(text, rows),
                )
            except SlackApiError as error:
                if is_outside_channel(error):
                    raise PlaceUnreachable(f"not a member of {self.place.channel}") from error
                raise

    async def _edit_status(self, text: str, rows: tuple[tuple[Button, ...], ...]) -> bool:
        """Edit the status message; False when it is gone (deleted by someone) so a new one is posted."""
        if self.place.status_ts is None:
            return False
        try:
            await self.client.chat_update(
                channel=self.place.channel,
                ts=self.place.status_ts,
                text=blocks.fallback_text(text),
                blocks=blocks.message_blocks(text, rows),
            )
        except SlackApiError as error:
            if error.response.get("error") != "message_not_found":
                raise
            log.info("status message %s in %s is gone; posting a new one", self.place.status_ts, self.place.channel)
            self.place.status_ts = None
            return False
        return True

    async def refuse(self, text: str) -> None:
        try:
            await self.client.chat_postEphemeral(
                channel=self.place.channel,
                user=self.place.user,
                thread_ts=self.place.thread_ts,
                text=blocks.fallback_text(text),
                blocks=[blocks.section(text)],
            )
        except SlackApiError as error:
            if not is_outside_channel(error):
                raise
            if not self.response_url:
                raise PlaceUnreachable(f"not a member of {self.place.channel}, and no response_url") from error
            await self._reply_by_response_url(text)

    async def _reply_by_response_url(self, text: str) -> None:
        webhook = AsyncWebhookClient(self.response_url or "", session=self.client.session)
        try:
            response = await webhook.send(
                text=blocks.fallback_text(text), blocks=[blocks.section(text)], response_type="ephemeral"
            )
        except (aiohttp.ClientError, ValueError) as error:  # not a URL, or nothing answers there
            raise PlaceUnreachable(f"not a member of {self.place.channel}; response_url failed: {error!r}") from error
        if response.status_code != 200:
            raise RuntimeError(f"response_url answered HTTP {response.status_code}: {response.body[:200]!r}")

    async def deliver(self, delivery: Delivery) -> None:
        """Upload the images (one call), then post the buttons. A retry after a failure redoes only the step
        that failed, so one successful delivery never shows the images twice."""
        # One delivery's posts are named by the place, the job and its files (a release of withheld images is
        # another delivery of the same job).
        key = post_key(self.place.key, delivery.job_id, *(a.path for a in delivery.attachments))
        async with self._lock:
            if delivery.job_id not in self.place.uploaded:
                file_ids = await self._upload(key, delivery)
                self.place.uploaded.append(delivery.job_id)
                self.place.files[delivery.job_id] = file_ids
            if delivery.button_rows and delivery.job_id not in self._buttons_posted:
                files = ",".join(self.place.files.get(delivery.job_id, []))
                await self._poster.post_message(
                    post_key("buttons", key),
                    Place(self.place.channel, self.place.reply_thread),
                    text=blocks.fallback_text(delivery.text),
                    blocks=blocks.with_delete_value(blocks.message_blocks(delivery.text, delivery.button_rows), files),
                )
                self._buttons_posted.add(delivery.job_id)

    async def _upload(self, key: str, delivery: Delivery) -> list[str]:
        """Upload the images, shared in one message; their Slack file ids."""
        contents = await asyncio.gather(*(asyncio.to_thread(Path(a.path).read_bytes) for a in delivery.attachments))
        return await self._poster.upload_files(
            post_key("images", key),
            Place(self.place.channel, self.place.reply_thread),
            [
                FileToUpload(attachment.filename, attachment.filename, data)
                for attachment, data in zip(delivery.attachments, contents, strict=True)
            ],
            initial_comment=blocks.fallback_text(delivery.text, mention=self.place.user),
        )

    async def remove_pressed_message(self) -> None:
        """The Delete button: the message with the buttons (chat.delete) and the uploaded images (files.delete,
        which also takes down the message that shared them). What is gone already is no error."""
        if self.pressed is None:
            return
        for file_id in self.pressed.file_ids:
            await _ignoring(GONE_ERRORS, self.client.files_delete(file=file_id))
        await _ignoring(GONE_ERRORS, self.client.chat_delete(channel=self.place.channel, ts=self.pressed.ts))

    async def notify(self, text: str) -> None:
        """In the place of the request, mentioning the requester; where the bot can no longer post (removed,
        channel archived or deleted), in a direct message instead."""
        key = post_key("notify", uuid.uuid4().hex)  # each note is its own post, however alike their texts
        try:
            await self._poster.post_message(
                key,
                Place(self.place.channel, self.place.reply_thread),
                text=blocks.fallback_text(text, mention=self.place.user),
                blocks=[blocks.section(text, mention=self.place.user)],
            )
        except SlackApiError as error:
            if self.place.channel == self.place.user or not self.place.user:
                raise
            log.info(
                "cannot post in %s (%s); telling %s by DM",
                self.place.channel,
                error.response.get("error"),
                self.place.user,
            )
            await self._poster.post_message(
                post_key("notify-dm", key),
                Place(self.place.user),
                text=blocks.fallback_text(text),
                blocks=[blocks.section(text)],
            )


@dataclass
class ReviewMessage:
    channel: str
    ts: str


@dataclass
class SlackModerators:
    """The moderators' channel: review posts with Approve/Reject, edited once someone decides."""

    client: AsyncWebClient
    channel: str
    _posted: dict[str, ReviewMessage] = field(default_factory=dict)
    _poster: OncePoster = field(init=False)
    """Its log holds review posts that may have been made without our knowing (in memory: the desk retries
    in-process)."""

    def __post_init__(self) -> None:
        self._poster = OncePoster(self.client, PostLog())

    def remember(self, item_id: str, channel: str, ts: str) -> None:
        """Note where a review message is (from a moderator's click): after a restart this is how we find it."""
        self._posted[item_id] = ReviewMessage(channel, ts)

    async def post_review(self, post: ReviewPost) -> None:
        """In the moderators' channel, or the workspace's own when its admins set one.

        A retry after a failure (the review desk's) posts only what did not get through: the message once, then
        the images in its thread."""
        posted = self._posted.get(post.item_id)
        if posted is None:
            channel = post.channel or self.channel
            ts = await self._poster.post_message(
                post_key("review", post.item_id),
                Place(channel),
                text=blocks.fallback_text(post.text),
                blocks=blocks.message_blocks(post.text, (post.buttons,)),
            )
            posted = ReviewMessage(channel, ts)
            self._posted[post.item_id] = posted
        if post.image_paths:
            contents = await asyncio.gather(*(asyncio.to_thread(Path(p).read_bytes) for p in post.image_paths))
            await self._poster.upload_files(
                post_key("review-images", post.item_id),
                Place(posted.channel, posted.ts),
                [
                    FileToUpload(Path(path).name, Path(path).name, data)
                    for path, data in zip(post.image_paths, contents, strict=True)
                ],
            )

    async def close_review(self, item_id: str, text: str, channel: str = "") -> None:
        """After a restart the post is looked for in the channel it went to (the workspace's own, or ours)."""
        channel = channel or self.channel
        message = self._posted.get(item_id) or await self._find_review_message(item_id, channel)
        if message is None:  # not found (too old, or no history scope): say it in the channel instead
            await self._poster.post_message(
                post_key("review-decided", item_id),
                Place(channel),
                text=blocks.fallback_text(text),
                blocks=[blocks.section(text)],
            )
            return
        await self.client.chat_update(
            channel=message.channel, ts=message.ts, text=blocks.fallback_text(text), blocks=[blocks.section(text)]
        )
        self._posted.pop(item_id, None)

    async def _find_review_message(self, item_id: str, channel: str) -> ReviewMessage | None:
        """After a restart the map is empty: the review message is the one whose buttons name the item
        (needs the `channels:history` or `groups:history` scope; without it the decision is posted anew)."""
        try:
            page = await self.client.conversations_history(channel=channel, limit=HISTORY_SCAN_LIMIT)
        except SlackApiError as error:
            log.warning(
                "review %s: cannot read the moderators' channel (%s); posting the decision",
                item_id,
                error.response.get("error"),
            )
            return None
        suffix = f":{item_id}"
        for message in page.get("messages") or []:
            for block in message.get("blocks") or []:
                if any(str(element.get("action_id", "")).endswith(suffix) for element in block.get("elements") or []):
                    return ReviewMessage(channel, str(message["ts"]))
        log.warning("review %s: its moderator message was not found; posting the decision", item_id)
        return None


GONE_ERRORS = frozenset({"message_not_found", "file_not_found", "file_deleted"})


async def _ignoring(errors: frozenset[str], call: Awaitable[Any]) -> None:
    try:
        await call
    except SlackApiError as error:
        if error.response.get("error") not in errors:
            raise


def is_outside_channel(error: Exception) -> bool:
    """Slack's answer when the bot is not a member of the channel (public: not_in_channel; private: not found)."""
    return isinstance(error, SlackApiError) and error.response.get("error") in OUTSIDE_CHANNEL_ERRORS


def _optional_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
