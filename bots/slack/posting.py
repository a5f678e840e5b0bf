"""Slack posts retried when Slack fails, and still made once when Slack's answer is lost.

A post (chat.postMessage, files.completeUploadExternal) is not idempotent: after a server error (5xx) or a
connection lost mid-request, Slack may have made it all the same, and posting again would show it twice. So every
post is marked, and before a retry the bot looks for the mark among the thread's (or the channel's) recent
messages; it posts again only when it is not there:

- a message carries Slack message metadata, `{"event_type": "imagine_post", "event_payload": {"key": ...}}`,
  which conversations.history / conversations.replies return with `include_all_metadata`;
- an upload is staged first (files.getUploadURLExternal and the bytes), so its file ids are known before it is
  shared; the retry looks for the message that shares them, and completes the same files again if none does (the
  images are not uploaded twice either).

Keys name one post for good (the status message of a place, the buttons of one delivery, a review item), so a
later call (the delivery layer's retry, a redelivery sweep, a replier rebuilt after a restart) also looks first
when an earlier call for the same key failed: `PostLog` remembers those keys, and the staged file ids, and is
journaled with the place. Looking needs a history scope (`channels:history`, `groups:history`, `im:history`);
where the bot cannot read the place it posts again: a duplicate is better than a post that never arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

MARK_EVENT_TYPE = "imagine_post"
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
"""Waits between the tries of one post (a 429 is waited out by slack_sdk itself and does not count here)."""
LOOKUP_LIMIT = 200
CLOCK_SKEW_S = 60.0
"""A lookup reads from a minute before the first try: Slack's clock and ours may differ a little."""
KEY_LENGTH = 32
T = TypeVar("T")


@dataclass
class PostLog:
    """What a place remembers of its posts between calls (JSON-able, journaled with the place)."""

    unconfirmed: list[str] = field(default_factory=list)
    """Keys of posts whose last try failed: Slack may have made them, so the next try looks first."""
    staged: dict[str, list[str]] = field(default_factory=dict)
    """Uploads staged but not known to be shared: key -> the staged file ids (completed again, not re-uploaded)."""
    since: float = 0.0
    """When the first of the unconfirmed posts was tried (epoch seconds): lookups read from then on."""

    def to_dict(self) -> dict[str, Any]:
        return {"unconfirmed": list(self.unconfirmed), "staged": dict(self.staged), "since": self.since}

    @classmethod
    def from_dict(cls, data: Any) -> PostLog:
        if not isinstance(data, dict):
            return cls()
        staged = data.get("staged") or {}
        return cls(
            unconfirmed=[str(key) for key in data.get("unconfirmed") or []],
            staged={str(key): [str(f) for f in ids] for key, ids in staged.items()} if isinstance(staged, dict) else {},
            since=float(data.get("since") or 0.0),
        )

    def trying(self, key: str) -> bool:
        """Note a post about to be tried; whether an earlier try of it may have been made."""
        earlier = key in self.unconfirmed
        if not earlier:
            if not self.unconfirmed:
                self.since = time.time()
            self.unconfirmed.append(key)
        return earlier

    def settled(self, key: str) -> None:
        """The post is known to be made (or known not to be): nothing to look for any more."""
        if key in self.unconfirmed:
            self.unconfirmed.remove(key)
        self.staged.pop(key, None)


def post_key(*parts: str) -> str:
    """A key for metadata (short, and free of whatever characters the parts hold)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:KEY_LENGTH]


def answer_lost(error: BaseException) -> bool:
    """A failure after which the post may have been made: a server error, or no answer (a dropped connection or
    a timeout). Slack's own refusals (`ok: false` with a 200) and rate limits mean it was not."""
    if isinstance(error, SlackApiError):
        return int(error.response.status_code) >= 500
    return isinstance(error, aiohttp.ClientError | TimeoutError)


@dataclass(frozen=True)
class Place:
    """Where a post goes: a channel, or a thread in it."""

    channel: str
    thread_ts: str | None = None


@dataclass(frozen=True)
class FileToUpload:
    filename: str
    title: str
    data: bytes


class OncePoster:
    """Posts for one `PostLog`: retried with backoff, looked for before each retry."""

    def __init__(
        self, client: AsyncWebClient, log_: PostLog, *, retry_delays: Sequence[float] = RETRY_DELAYS_S
    ) -> None:
        self._client = client
        self.log = log_
        self._retry_delays = tuple(retry_delays)

    async def post_message(self, key: str, place: Place, *, text: str, blocks: list[dict[str, Any]]) -> str:
        """chat.postMessage, once; the message's ts."""

        async def post() -> str:
            response = await self._client.chat_postMessage(
                channel=place.channel,
                thread_ts=place.thread_ts,
                text=text,
                blocks=blocks,
                metadata={"event_type": MARK_EVENT_TYPE, "event_payload": {"key": key}},
            )
            return str(response["ts"])

        async def find() -> str | None:
            message = await self._find(place, lambda m: _mark(m) == key)
            return None if message is None else str(message["ts"])

        return await self._once(key, place, post, find)

    async def upload_files(
        self, key: str, place: Place, files: Sequence[FileToUpload], *, initial_comment: str | None = None
    ) -> list[str]:
        """files.getUploadURLExternal and the bytes for each file, then one files.completeUploadExternal that
        shares them all in `place`, once; their file ids."""
        file_ids = self.log.staged.get(key)
        if file_ids is None or len(file_ids) != len(files):
            file_ids = [await self._stage(file) for file in files]
            self.log.staged[key] = file_ids
        staged = file_ids

        async def complete() -> list[str]:
            await self._client.files_completeUploadExternal(
                files=[{"id": file_id, "title": file.title} for file_id, file in zip(staged, files, strict=True)],
                channel_id=place.channel,
                thread_ts=place.thread_ts,
                initial_comment=initial_comment,
            )
            return staged

        async def find() -> list[str] | None:
            message = await self._find(place, lambda m: staged[0] in _file_ids(m))
            return None if message is None else staged

        try:
            return await self._once(key, place, complete, find)
        except SlackApiError as error:
            if not answer_lost(error):  # refused (the staged files expired, say): stage anew next time
                self.log.staged.pop(key, None)
            raise

    async def _stage(self, file: FileToUpload) -> str:
        response = await self._client.files_getUploadURLExternal(filename=file.filename, length=len(file.data))
        # slack_sdk's own upload step (what files_upload_v2 does between its two API calls).
        result = await self._client._upload_file(
            url=str(response["upload_url"]),
            data=file.data,
            logger=self._client._logger,
            timeout=self._client.timeout,
            proxy=self._client.proxy,
            ssl=self._client.ssl,
        )
        if result.status != 200:
            raise SlackRequestError(f"uploading {file.filename} failed: HTTP {result.status} {str(result.body)[:200]}")
        return str(response["file_id"])

    async def _once(
        self, key: str, place: Place, post: Callable[[], Awaitable[T]], find: Callable[[], Awaitable[T | None]]
    ) -> T:
        may_exist = self.log.trying(key)
        for delay in (*self._retry_delays, None):
            if may_exist:
                found = await find()
                if found is not None:
                    log.info("an earlier try posted %s in %s already; not posting it again", key, place.channel)
                    self.log.settled(key)
                    return found
            try:
                result = await post()
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as error:
                if not answer_lost(error) and not may_exist:  # refused: not made, and nothing to look for
                    self.log.settled(key)
                    raise
                if delay is None or not answer_lost(error):
                    raise
                log.warning(
                    "a Slack post to %s failed (%s); retrying in %.1f s", place.channel, _describe(error), delay
                )
                may_exist = True
                await asyncio.sleep(delay)
                continue
            self.log.settled(key)
            return result
        raise AssertionError("unreachable: the last try returns or raises")

    async def _find(self, place: Place, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """The first recent message in `place` that `wanted` picks, or None (also when Slack cannot say)."""
        oldest = f"{max(self.log.since - CLOCK_SKEW_S, 0.0):.6f}"
        try:
            if place.thread_ts:
                page = await self._client.conversations_replies(
                    channel=place.channel,
                    ts=place.thread_ts,
                    oldest=oldest,
                    limit=LOOKUP_LIMIT,
                    include_all_metadata=True,
                )
            else:
                page = await self._client.conversations_history(
                    channel=place.channel, oldest=oldest, limit=LOOKUP_LIMIT, include_all_metadata=True
                )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as error:
            log.warning(
                "cannot read %s to look for an earlier try (%s); posting again", place.channel, _describe(error)
            )
            return None
        return next((m for m in page.get("messages") or [] if isinstance(m, dict) and wanted(m)), None)


def _mark(message: dict[str, Any]) -> str | None:
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != MARK_EVENT_TYPE:
        return None
    payload = metadata.get("event_payload")
    return str(payload.get("key")) if isinstance(payload, dict) else None


def _file_ids(message: dict[str, Any]) -> set[str]:
    return {str(f.get("id")) for f in message.get("files") or [] if isinstance(f, dict)}


def _describe(error: BaseException) -> str:
    if isinstance(error, SlackApiError):
        return f"HTTP {error.response.status_code} {error.response.get('error')}"
    return repr(error)
