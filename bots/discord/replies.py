"""Replier and ModeratorChannel for Discord: the conversation layer's calls turned into Discord requests.

A reply goes through the interaction's webhook while its token lives (15 minutes), through the channel with the
bot token after that (or for DM text prompts), and to the user's DM when the channel is closed to the bot.
Everything a Replier needs is in a `DeliveryContext`, journaled with the job, so a restarted bot rebuilds it.

One Discord rule shapes this module: after a deferred ("thinking") response, the first followup does not create
a message, it replaces the thinking message and keeps its visibility. So a private answer first deletes the
pending original, and a delivery that finds it still pending turns it into the images message.

Images are posted once even when Discord's answer is lost. A channel post carries a nonce with `enforce_nonce`:
Discord answers a retry with the first message. An interaction followup cannot carry one, so it is sent once
(bots/discord/single_try.py: discord.py would retry a 5xx by itself), and before a followup that may repeat an
earlier try (after a lost answer, or from a replier rebuilt after a restart) the replier looks through the
channel's messages since the interaction for one of ours with the same text and buttons, and posts only if none
is there. (The alternative, images through a channel post with a nonce, would drop the reply's link to the
command and fail where the bot is installed by the user rather than in the server.) Where the bot cannot read
the channel it posts again: a duplicate is better than images that never arrive."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import io
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import discord

from bots.buttons import Action, Button, Style, parse_button
from bots.contract import Attachment, Delivery, ReviewPost
from bots.discord.single_try import OutcomeUnknown, single_try
from bots.errors import BadButton

log = logging.getLogger(__name__)

INTERACTION_TOKEN_LIFETIME_S = 15 * 60
TOKEN_SAFETY_MARGIN_S = 60
"""Stop using a token a minute before Discord does, so a slow upload does not straddle the expiry."""
NONCE_LENGTH = 25  # Discord's limit for a message nonce
INVALID_WEBHOOK_TOKEN = 50027
FLAG_LOADING = 1 << 7
ORIGINAL_RESPONSE = "@original"
"""What Discord calls an interaction's first response in webhook message routes, where its id is not known."""
REPOST_CHECK_LIMIT = 100
"""Messages since the interaction looked through for an earlier try of a followup (one page of history)."""
LOST_ANSWERS = (OutcomeUnknown, aiohttp.ClientError, TimeoutError)
"""Failures after which a followup may have been posted all the same."""

_STYLES = {
    Style.PRIMARY: discord.ButtonStyle.primary,
    Style.SECONDARY: discord.ButtonStyle.secondary,
    Style.SUCCESS: discord.ButtonStyle.success,
    Style.DANGER: discord.ButtonStyle.danger,
}


_ACTIONS = "|".join(action.value for action in Action)
_BUTTON_TEMPLATE = rf"imagine:(?:{_ACTIONS}):[A-Za-z0-9-]+(?::\d+)?"


class ImagineButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=_BUTTON_TEMPLATE):
    """Every `imagine:` button, whoever sent it and whenever. A dynamic item, so discord.py keeps no view per
    message; clicks are not handled here but by the client's `on_interaction`, which answers every custom id
    (bots/discord/adapter.py), so buttons keep working after a restart."""

    def __init__(self, button: Button) -> None:
        super().__init__(
            discord.ui.Button(label=button.label or None, style=_STYLES[button.style], custom_id=button.custom_id)
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ImagineButton:
        try:
            return cls(parse_button(match.group(0)))
        except BadButton:  # matched the template, yet not ours (a target of dashes only): on_interaction answers
            return cls(Button(Action.REROLL, "0"))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Nothing: the adapter answered this click in on_interaction."""


def build_view(rows: Sequence[Sequence[Button]]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for row_index, row in enumerate(rows):
        for button in row:
            item = ImagineButton(button)
            item.item.row = row_index
            view.add_item(item)
    return view


class Route(enum.StrEnum):
    INTERACTION = "interaction"
    """Replies go through the interaction's webhook while its token lives."""
    CHANNEL = "channel"
    """Replies go to the channel with the bot token (DM text prompts)."""


@dataclass(frozen=True)
class DeliveryContext:
    """What a Replier needs, as a JSON-able dict journaled with the job."""

    route: Route
    channel_id: str
    user_id: str
    guild_id: str = ""
    application_id: str = ""
    interaction_token: str = ""
    token_issued_at: float = 0.0
    """Epoch seconds at which Discord created the interaction (its snowflake time)."""
    original_message_id: str = ""
    """The deferred response message, which becomes the status message."""
    deferred_thinking: bool = False
    """True when the original is a "thinking" message that the first followup would replace."""

    def to_dict(self) -> dict[str, Any]:
        # vars(), not dataclasses.asdict: plain values need no deep copy, and this runs before the ack.
        return {"platform": "discord", **vars(self), "route": self.route.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeliveryContext:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["route"] = Route(values.get("route", Route.CHANNEL))
        return cls(**values)


@dataclass
class _Upload:
    filename: str
    data: bytes


def _read_attachments(attachments: Sequence[Attachment]) -> list[_Upload]:
    return [_Upload(a.filename, Path(a.path).read_bytes()) for a in attachments]


def _read_paths(paths: Sequence[str]) -> list[_Upload]:
    return [_Upload(Path(p).name, Path(p).read_bytes()) for p in paths]


def _files(uploads: Sequence[_Upload]) -> list[discord.File]:
    """Fresh File objects per request: discord.py closes them after sending."""
    return [discord.File(io.BytesIO(u.data), filename=u.filename) for u in uploads]


def _nonce(kind: str, key: str) -> str:
    return hashlib.sha256(f"{kind}:{key}".encode()).hexdigest()[:NONCE_LENGTH]


def _is_expired_token(exc: discord.HTTPException) -> bool:
    return exc.status == 401 or exc.code == INVALID_WEBHOOK_TOKEN


class OriginalState(enum.Enum):
    PENDING = "pending"
    """A thinking message: the next followup would replace it."""
    SHOWN = "shown"
    GONE = "gone"
    UNKNOWN = "unknown"
    """Rebuilt after a restart: ask Discord when it matters."""


class DiscordReplier:
    """Talks to one requester about one command or click. Implements bots.contract.Replier."""

    def __init__(
        self,
        client: discord.Client,
        context: DeliveryContext,
        *,
        clock: Callable[[], float] = time.time,
        fresh: bool = False,
    ) -> None:
        self._client = client
        self.context = context
        self._clock = clock
        self._status_message_id = context.original_message_id
        if context.route is Route.INTERACTION and context.deferred_thinking:
            self._original = OriginalState.PENDING if fresh else OriginalState.UNKNOWN
        else:
            self._original = OriginalState.SHOWN
        self._token_dead = False
        self._status_consumed = False  # the status message became the images message: no more status lines
        self._may_have_posted = not fresh
        """A followup of this replier's may be in the channel without our knowing: rebuilt from a journaled
        context (the process before may have posted), or an answer was lost. Look before posting again."""

    # ------------------------------------------------------------------ the Replier protocol

    def journal_place(self) -> None:
        """Nothing to journal after the start: the context stored with the command already names the
        interaction's original message, which is the status message."""
        return None

    async def show_status(self, text: str, buttons: Sequence[Button] = ()) -> None:
        if self._status_consumed:
            return
        view = build_view([buttons]) if buttons else None
        try:
            if self._use_webhook() and await self._knows_status_message():
                await self._webhook().edit_message(
                    int(self._status_message_id), content=text, view=view, allowed_mentions=_NO_MENTIONS
                )
                self._original = OriginalState.SHOWN
                return
        except discord.HTTPException as exc:
            if not _is_expired_token(exc):
                raise
            self._token_dead = True
        await self._show_status_in_channel(text, view)

    async def refuse(self, text: str) -> None:
        await self._private(text)

    async def notify(self, text: str) -> None:
        await self._private(text)

    async def deliver(self, delivery: Delivery) -> None:
        uploads = await asyncio.to_thread(_read_attachments, delivery.attachments)
        view = build_view(delivery.button_rows) if delivery.button_rows else None
        if self._use_webhook():
            try:
                if await self._deliver_by_webhook(delivery, uploads, view):
                    return
            except discord.HTTPException as exc:
                if not _is_expired_token(exc):
                    raise
                self._token_dead = True
        await self._deliver_in_channel(delivery, uploads, view)

    async def remove_pressed_message(self) -> None:
        """The Delete button: take down the message it was on. For a component interaction, the interaction's
        @original is the message the button is on (whoever posted it); past the token, the bot token deletes it."""
        if self._use_webhook():
            try:
                await self._webhook().delete_message(ORIGINAL_RESPONSE)  # type: ignore[arg-type]
                return
            except discord.NotFound:
                return  # already gone
            except discord.HTTPException as exc:
                if not _is_expired_token(exc):
                    raise
                self._token_dead = True
        if self.context.original_message_id:
            try:
                await self._channel().get_partial_message(int(self.context.original_message_id)).delete()
            except discord.NotFound:
                pass

    # ------------------------------------------------------------------ webhook (interaction token)

    def _use_webhook(self) -> bool:
        if self.context.route is not Route.INTERACTION or self._token_dead:
            return False
        age = self._clock() - self.context.token_issued_at
        return age < INTERACTION_TOKEN_LIFETIME_S - TOKEN_SAFETY_MARGIN_S

    def _webhook(self) -> discord.Webhook:
        """The interaction's webhook, as discord.py's Interaction.followup builds it; rebuilt from the context so
        it also works after a restart. An application webhook, so that ephemeral messages are allowed."""
        webhook = discord.Webhook.partial(
            int(self.context.application_id), self.context.interaction_token, client=self._client
        )
        webhook.type = discord.WebhookType.application
        return webhook

    async def _original_state(self) -> OriginalState:
        if self._original is OriginalState.UNKNOWN:
            known = bool(self._status_message_id)
            try:
                # A str id works: discord.py puts it in the path, "@original" needs no quoting.
                message = await self._webhook().fetch_message(
                    int(self._status_message_id) if known else ORIGINAL_RESPONSE  # type: ignore[arg-type]
                )
            except discord.NotFound:
                self._original = OriginalState.GONE
                # Stored, then the process died before its defer: the token never answered, so it cannot
                # send followups either. The bot token still can.
                self._token_dead = self._token_dead or not known
            else:
                self._status_message_id = str(message.id)
                loading = bool(message.flags.value & FLAG_LOADING)
                self._original = OriginalState.PENDING if loading else OriginalState.SHOWN
        return self._original

    async def _knows_status_message(self) -> bool:
        """A command is stored before it is deferred, so a replier rebuilt from what was stored may not know
        its thinking message's id: Discord tells it, as the interaction's @original."""
        if not self._status_message_id and self._original is OriginalState.UNKNOWN:
            await self._original_state()
        return bool(self._status_message_id)

    async def _deliver_by_webhook(
        self, delivery: Delivery, uploads: list[_Upload], view: discord.ui.View | None
    ) -> bool:
        """False, with nothing sent, when looking at the original showed that the token never answered."""
        webhook = self._webhook()
        state = await self._original_state()
        if self._token_dead:
            return False
        if state is OriginalState.PENDING:
            # Nothing was shown yet: the thinking message becomes the images message (an idempotent edit).
            await webhook.edit_message(
                int(self._status_message_id),
                content=delivery.text,
                attachments=_files(uploads),
                view=view,
                allowed_mentions=_NO_MENTIONS,
            )
            self._original = OriginalState.SHOWN
            self._status_consumed = True
            return True
        if self._may_have_posted and await self._posted_before(delivery):
            log.info("job %s: an earlier try posted the images already; not posting them again", delivery.job_id)
            return True
        try:
            with single_try():
                await webhook.send(
                    delivery.text,
                    files=_files(uploads),
                    view=view or discord.utils.MISSING,
                    wait=True,
                    allowed_mentions=_NO_MENTIONS,
                )
        except LOST_ANSWERS:
            self._may_have_posted = True
            raise
        return True

    async def _posted_before(self, delivery: Delivery) -> bool:
        """Whether the channel holds, since the interaction, a message of ours with this delivery's text and
        buttons (their ids name the job): an earlier try whose answer was lost. False where the bot cannot
        read the channel (installed by the user, not in the server): then it posts again."""
        wanted = [button.custom_id for row in delivery.button_rows for button in row]
        since = discord.Object(discord.utils.time_snowflake(datetime.fromtimestamp(self.context.token_issued_at, UTC)))
        me = self._client.user
        try:
            async for message in self._channel().history(limit=REPOST_CHECK_LIMIT, after=since):
                mine = me is not None and message.author.id == me.id
                if mine and message.content == delivery.text and _custom_ids(message) == wanted:
                    return True
        except (discord.Forbidden, discord.NotFound):
            log.warning(
                "job %s: cannot read channel %s to check for an earlier post", delivery.job_id, self.context.channel_id
            )
        return False

    async def _private(self, text: str) -> None:
        """Only the requester sees it: an ephemeral followup while the token lives, else their DM."""
        if self._use_webhook():
            try:
                state = await self._original_state()
                if state is OriginalState.PENDING:
                    await self._webhook().delete_message(int(self._status_message_id))
                    self._original = OriginalState.GONE
                if not self._token_dead:
                    await self._webhook().send(text, ephemeral=True, wait=True, allowed_mentions=_NO_MENTIONS)
                    return
            except discord.HTTPException as exc:
                if not _is_expired_token(exc):
                    raise
                self._token_dead = True
        await self._send_to_user(text)

    # ------------------------------------------------------------------ channel (bot token)

    def _channel(self) -> discord.PartialMessageable:
        return self._client.get_partial_messageable(int(self.context.channel_id))

    async def _show_status_in_channel(self, text: str, view: discord.ui.View | None) -> None:
        channel = self._channel()
        if self._status_message_id:
            try:
                await channel.get_partial_message(int(self._status_message_id)).edit(content=text, view=view)
                return
            except (discord.Forbidden, discord.NotFound):
                log.info("status message %s is out of reach; posting a new one", self._status_message_id)
        try:
            message = await channel.send(text, view=view or discord.utils.MISSING, allowed_mentions=_NO_MENTIONS)
        except (discord.Forbidden, discord.NotFound):
            log.info("channel %s is closed to the bot; status not shown", self.context.channel_id)
            return
        self._status_message_id = str(message.id)

    async def _deliver_in_channel(
        self, delivery: Delivery, uploads: list[_Upload], view: discord.ui.View | None
    ) -> None:
        # With enforce_nonce a retried post returns the first message. The key is stable across restarts (the
        # journaled context and the files) and tells apart different posts of one job (U1, U2, a release).
        key = ":".join(
            [
                self.context.interaction_token or self.context.channel_id,
                delivery.job_id,
                *(attachment.path for attachment in delivery.attachments),
            ]
        )
        nonce = _nonce("deliver", key)
        try:
            await self._channel().send(
                delivery.text,
                files=_files(uploads),
                view=view or discord.utils.MISSING,
                nonce=nonce,
                allowed_mentions=_NO_MENTIONS,
            )
        except (discord.Forbidden, discord.NotFound):
            log.info(
                "channel %s is closed to the bot; delivering job %s by DM", self.context.channel_id, delivery.job_id
            )
            dm = await self._client.create_dm(discord.Object(int(self.context.user_id)))
            await dm.send(delivery.text, files=_files(uploads), view=view or discord.utils.MISSING, nonce=nonce)

    async def _send_to_user(self, text: str) -> None:
        if not self.context.guild_id:  # a DM already is private
            await self._channel().send(text, allowed_mentions=_NO_MENTIONS)
            return
        dm = await self._client.create_dm(discord.Object(int(self.context.user_id)))
        await dm.send(text)


def _custom_ids(message: discord.Message) -> list[str]:
    return [
        str(getattr(component, "custom_id", "") or "")
        for row in message.components
        for component in getattr(row, "children", [])
    ]


_NO_MENTIONS = discord.AllowedMentions.none()


class DiscordModeratorChannel:
    """Review posts in `discord.moderator_channel_id`. Implements bots.contract.ModeratorChannel."""

    HISTORY_SCAN_LIMIT = 100

    def __init__(self, client: discord.Client, channel_id: int) -> None:
        self._client = client
        self._channel_id = channel_id
        self._posted: dict[str, tuple[int, int]] = {}  # review item id -> (channel id, message id)

    def _channel(self, channel_id: int | None = None) -> discord.PartialMessageable:
        return self._client.get_partial_messageable(channel_id or self._channel_id)

    async def post_review(self, post: ReviewPost) -> None:
        """In the moderators' channel, or the server's own when its admins set one."""
        uploads = await asyncio.to_thread(_read_paths, post.image_paths)
        channel_id = int(post.channel) if post.channel.isdigit() else self._channel_id
        message = await self._channel(channel_id).send(
            post.text,
            files=_files(uploads),
            view=build_view([post.buttons]) if post.buttons else discord.utils.MISSING,
            nonce=_nonce("review", post.item_id),
            allowed_mentions=_NO_MENTIONS,
        )
        self._posted[post.item_id] = (channel_id, message.id)

    async def close_review(self, item_id: str, text: str, channel: str = "") -> None:
        """After a restart the post is looked for in the channel it went to (the server's own, or ours)."""
        posted = self._posted.get(item_id)
        if posted is None:
            channel_id = int(channel) if channel.isdigit() else self._channel_id
            message_id = await self._find_review_message(item_id, channel_id)
            posted = (channel_id, message_id) if message_id is not None else None
            if posted is None:
                log.warning("review %s: its moderator message was not found; posting the decision", item_id)
                await self._channel(channel_id).send(text, allowed_mentions=_NO_MENTIONS)
                return
        channel_id, message_id = posted
        await self._channel(channel_id).get_partial_message(message_id).edit(content=text, view=None)
        self._posted.pop(item_id, None)

    async def _find_review_message(self, item_id: str, channel_id: int) -> int | None:
        """After a restart the id map is empty: the review message is the one whose buttons name the item."""
        suffix = f":{item_id}"
        async for message in self._channel(channel_id).history(limit=self.HISTORY_SCAN_LIMIT):
            for row in message.components:
                for component in getattr(row, "children", []):
                    if str(getattr(component, "custom_id", "") or "").endswith(suffix):
                        return message.id
        return None
