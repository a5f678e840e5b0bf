"""Stored Slack requests → conversation calls. Runs after the request was acknowledged (see bots/intake.py).

A slash command, a mention or a DM becomes an `ImagineCommand`; a click on an `imagine:` button becomes
`Conversation.press`. Where to answer is a `SlackPlace`, journaled with the job together with the request's intake
key, so that a request replayed after a restart can tell whether it already got as far as a job.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bots import messages
from bots.buttons import Action, parse_button
from bots.conversation import Conversation, ImageSource, ImagineCommand
from bots.errors import BadButton, BadOptions, Deferred, PlaceUnreachable
from bots.intake import IntakeEntry
from bots.slack.blocks import delete_value_files
from bots.slack.moderators import ModeratorCheck
from bots.slack.replies import PressedMessage, SlackModerators, SlackPlace, SlackReplier
from bots.slack.text import parse_prompt_text
from engine.requests import Requester

log = logging.getLogger(__name__)

PLATFORM = "slack"

COMMAND, MENTION, DIRECT_MESSAGE, BUTTON = "command", "mention", "dm", "button"


class SlackRequestHandler:
    def __init__(
        self,
        client: AsyncWebClient,
        conversation: Conversation,
        moderators: SlackModerators | None,
        is_moderator: ModeratorCheck,
        *,
        file_origins: tuple[str, ...] = (),
    ) -> None:
        """`file_origins`: where shared files may be downloaded from (`image_prompts.slack_file_origins`)."""
        self.client = client
        self.file_origins = file_origins
        self.conversation = conversation
        self.moderators = moderators
        self.is_moderator = is_moderator
        self._group_checks: dict[str, ModeratorCheck] = {}
        """Workspaces' own moderator user groups (their admins' setting), by group id."""

    async def __call__(self, entry: IntakeEntry) -> None:
        try:
            opened = await self.conversation.open_stored(PLATFORM, entry)
        except Deferred:
            await self._tell_saved_for_restart(entry)
            raise
        if not opened:
            log.info("request %s already became a job before the restart", entry.key)
            return
        body = entry.payload
        if entry.kind in (COMMAND, MENTION, DIRECT_MESSAGE):
            place = _prompt_place(entry)
            if place is None:
                log.warning("ignoring a Slack %s without a user or a channel (%s)", entry.kind, entry.key)
                return
            if entry.kind == COMMAND:
                await self._imagine(
                    entry.key,
                    _string(body.get("text")),
                    place,
                    _string(body.get("team_id")),
                    _string(body.get("user_name")),
                    response_url=_string(body.get("response_url")) or None,
                )
            else:
                event = _mapping(body.get("event"))
                image = self._shared_image(event.get("files"))
                await self._imagine(
                    entry.key, _string(event.get("text")), place, _string(body.get("team_id")), image=image
                )
        elif entry.kind == BUTTON:
            await self._press(entry.key, body)
        else:
            log.warning("ignoring a stored Slack request of unknown kind %r", entry.kind)

    async def _tell_saved_for_restart(self, entry: IntakeEntry) -> None:
        """The queue stopped taking work (shutting down): the prompt stays stored and runs after the restart."""
        place = _prompt_place(entry)
        if place is not None and not entry.replayed:
            replier = SlackReplier(self.client, place, _string(entry.payload.get("response_url")) or None)
            await _refuse(replier, messages.SAVED_FOR_RESTART)

    async def _imagine(
        self,
        key: str,
        text: str,
        place: SlackPlace,
        team_id: str,
        display_name: str = "",
        response_url: str | None = None,
        image: ImageSource | None = None,
    ) -> None:
        replier = SlackReplier(self.client, place, response_url)
        try:
            options = parse_prompt_text(text)
        except BadOptions as error:
            await _refuse(replier, messages.invalid_request(str(error)))
            return
        command = ImagineCommand(
            prompt=options.prompt,
            requester=_requester(place, team_id, display_name),
            negative_prompt=options.negative_prompt,
            seed=options.seed,
            aspect=options.aspect,
            style=options.style,
            place=place.to_context(),
            intake_key=key,
            image=image,
            strength=options.strength,
        )
        try:
            await self.conversation.imagine(command, replier)
        except PlaceUnreachable:
            log.info("/imagine from %s in %s, a channel the bot is not in", place.user, place.channel)
            await _refuse(replier, messages.CANNOT_POST_HERE)
        except Exception:
            log.exception("could not take a Slack /imagine from %s", place.user)
            await _refuse(replier, messages.SOMETHING_WENT_WRONG)

    def _shared_image(self, files: Any) -> ImageSource | None:
        """The first file shared with a mention or a DM (`files:read`), fetched from Slack's file host with the
        bot token as a Bearer; its type is told from its content later, not from its name or mimetype."""
        if not isinstance(files, list) or not files:
            return None
        shared = _mapping(files[0])
        size = shared.get("size")
        return ImageSource(
            url=_string(shared.get("url_private_download")) or _string(shared.get("url_private")),
            allowed_origins=self.file_origins,
            headers={"Authorization": f"Bearer {self.client.token}"},
            declared_bytes=size if isinstance(size, int) and not isinstance(size, bool) else None,
        )

    async def _press(self, key: str, body: dict[str, Any]) -> None:
        actions = body.get("actions")
        action = _mapping(actions[0]) if isinstance(actions, list) and actions else {}
        custom_id = _string(action.get("action_id"))
        container = _mapping(body.get("container"))
        message = _mapping(body.get("message"))
        channel = _string(container.get("channel_id")) or _string(_mapping(body.get("channel")).get("id"))
        message_ts = _string(container.get("message_ts")) or _string(message.get("ts")) or None
        thread_ts = _string(container.get("thread_ts")) or _string(message.get("thread_ts")) or None
        if not thread_ts and not channel.startswith("D"):
            thread_ts = message_ts  # a click on a top-level channel message: answer in its thread
        user = _mapping(body.get("user"))
        place = _place(channel, user.get("id"), thread_ts)
        if place is None:
            log.warning("ignoring a click on %.100r without a user or a channel (%s)", custom_id, key)
            return
        try:
            button = parse_button(custom_id)
        except BadButton as error:
            log.warning("a click on an unknown Slack button: %s", error)
            await _refuse(SlackReplier(self.client, place), messages.UNKNOWN_BUTTON)
            return
        deciding = button.action in (Action.APPROVE, Action.REJECT)
        if deciding and self.moderators is not None and message_ts:
            self.moderators.remember(button.target, channel, message_ts)
        team = _string(_mapping(body.get("team")).get("id"))
        needs_moderator = deciding or button.action is Action.DELETE
        is_moderator = await self._is_moderator(place.user, team) if needs_moderator else False
        requester = _requester(place, team, _string(user.get("username")))
        pressed = None
        if message_ts:  # the Delete button's value names the files to delete with the message
            pressed = PressedMessage(message_ts, delete_value_files(_string(action.get("value"))))
        # New jobs from this click (variations, reroll) are answered where the click happened.
        try:
            await self.conversation.press(
                custom_id,
                requester,
                SlackReplier(self.client, place, pressed=pressed),
                is_moderator=is_moderator,
                place=place.to_context(),
                intake_key=key,
            )
        except PlaceUnreachable:
            log.info("a click by %s in %s, a channel the bot is not in: nowhere to answer", place.user, place.channel)

    async def _is_moderator(self, user_id: str, team_id: str) -> bool:
        """One of slack.moderator_user_ids or the moderators' user group, or a member of the user group the
        workspace's admins made its moderators."""
        if await self.is_moderator(user_id):
            return True
        group = (await self.conversation.server_settings(PLATFORM, team_id)).moderator_role if team_id else ""
        if not group:
            return False
        if group not in self._group_checks:
            self._group_checks[group] = ModeratorCheck(self.client, (), group)
        return await self._group_checks[group](user_id)


def _prompt_place(entry: IntakeEntry) -> SlackPlace | None:
    """Where a stored prompt is answered: a command where it was typed, a mention in its thread (a busy channel
    is not flooded), a DM in the DM. None for what is not a prompt (a button)."""
    body = entry.payload
    if entry.kind == COMMAND:
        return _place(body.get("channel_id"), body.get("user_id"))
    if entry.kind in (MENTION, DIRECT_MESSAGE):
        event = _mapping(body.get("event"))
        thread = _string(event.get("thread_ts")) or (_string(event.get("ts")) if entry.kind == MENTION else "")
        return _place(event.get("channel"), event.get("user"), thread or None)
    return None


async def _refuse(replier: SlackReplier, text: str) -> None:
    try:
        await replier.refuse(text)
    except Exception as error:  # Slack itself is failing: nothing more to tell the user
        log.warning("could not tell a Slack user that their request was refused: %r", error)


def _string(value: Any) -> str:
    """A field of a request as text: what is missing or not a string is empty (requests are not trusted)."""
    return value if isinstance(value, str) else ""


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _place(channel: Any, user: Any, thread_ts: str | None = None) -> SlackPlace | None:
    """Where to answer, or None when the request does not say who asked where (then nobody can be told)."""
    if not _string(channel) or not _string(user):
        return None
    return SlackPlace(channel=channel, user=user, thread_ts=thread_ts)


def _requester(place: SlackPlace, team_id: str, display_name: str = "") -> Requester:
    return Requester(
        platform=PLATFORM, user_id=place.user, server_id=team_id, channel_id=place.channel, display_name=display_name
    )
