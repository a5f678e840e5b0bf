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
from bots.conversation import Conversation, ImagineCommand
from bots.errors import BadButton, BadOptions, Deferred, PlaceUnreachable
from bots.intake import IntakeEntry
from bots.slack.moderators import ModeratorCheck
from bots.slack.replies import SlackModerators, SlackPlace, SlackReplier
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
    ) -> None:
        self.client = client
        self.conversation = conversation
        self.moderators = moderators
        self.is_moderator = is_moderator

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
        place = _prompt_place(entry)
        if entry.kind == COMMAND and place is not None:
            await self._imagine(
                entry.key,
                body.get("text", ""),
                place,
                body.get("team_id", ""),
                body.get("user_name", ""),
                response_url=body.get("response_url") or None,
            )
        elif entry.kind in (MENTION, DIRECT_MESSAGE) and place is not None:
            await self._imagine(entry.key, body["event"].get("text", ""), place, body.get("team_id", ""))
        elif entry.kind == BUTTON:
            await self._press(entry.key, body)
        else:
            log.warning("ignoring a stored Slack request of unknown kind %r", entry.kind)

    async def _tell_saved_for_restart(self, entry: IntakeEntry) -> None:
        """The queue stopped taking work (shutting down): the prompt stays stored and runs after the restart."""
        place = _prompt_place(entry)
        if place is not None and not entry.replayed:
            replier = SlackReplier(self.client, place, entry.payload.get("response_url") or None)
            await _refuse(replier, messages.SAVED_FOR_RESTART)

    async def _imagine(
        self,
        key: str,
        text: str,
        place: SlackPlace,
        team_id: str,
        display_name: str = "",
        response_url: str | None = None,
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
            place=place.to_context(),
            intake_key=key,
        )
        try:
            await self.conversation.imagine(command, replier)
        except PlaceUnreachable:
            log.info("/imagine from %s in %s, a channel the bot is not in", place.user, place.channel)
            await _refuse(replier, messages.CANNOT_POST_HERE)
        except Exception:
            log.exception("could not take a Slack /imagine from %s", place.user)
            await _refuse(replier, messages.SOMETHING_WENT_WRONG)

    async def _press(self, key: str, body: dict[str, Any]) -> None:
        custom_id = str(body["actions"][0].get("action_id", ""))
        try:
            button = parse_button(custom_id)
        except BadButton as error:
            log.warning("ignoring a click on an unknown Slack button: %s", error)
            return
        container = body.get("container") or {}
        message = body.get("message") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
        message_ts = container.get("message_ts") or message.get("ts")
        thread_ts = container.get("thread_ts") or message.get("thread_ts")
        if not thread_ts and not channel.startswith("D"):
            thread_ts = message_ts  # a click on a top-level channel message: answer in its thread
        place = SlackPlace(channel=channel, user=body["user"]["id"], thread_ts=thread_ts)
        deciding = button.action in (Action.APPROVE, Action.REJECT)
        if deciding and self.moderators is not None and message_ts:
            self.moderators.remember(button.target, channel, message_ts)
        is_moderator = await self.is_moderator(place.user) if deciding else False
        requester = _requester(place, (body.get("team") or {}).get("id", ""), body["user"].get("username", ""))
        # New jobs from this click (variations, reroll) are answered where the click happened.
        await self.conversation.press(
            custom_id,
            requester,
            SlackReplier(self.client, place),
            is_moderator=is_moderator,
            place=place.to_context(),
            intake_key=key,
        )


def _prompt_place(entry: IntakeEntry) -> SlackPlace | None:
    """Where a stored prompt is answered: a command where it was typed, a mention in its thread (a busy channel
    is not flooded), a DM in the DM. None for what is not a prompt (a button)."""
    body = entry.payload
    if entry.kind == COMMAND:
        return SlackPlace(channel=body["channel_id"], user=body["user_id"])
    if entry.kind in (MENTION, DIRECT_MESSAGE):
        event = body["event"]
        thread = event.get("thread_ts") or (event["ts"] if entry.kind == MENTION else None)
        return SlackPlace(channel=event["channel"], user=event["user"], thread_ts=thread)
    return None


async def _refuse(replier: SlackReplier, text: str) -> None:
    try:
        await replier.refuse(text)
    except Exception as error:  # Slack itself is failing: nothing more to tell the user
        log.warning("could not tell a Slack user that their request was refused: %r", error)


def _requester(place: SlackPlace, team_id: str, display_name: str = "") -> Requester:
    return Requester(
        platform=PLATFORM, user_id=place.user, server_id=team_id, channel_id=place.channel, display_name=display_name
    )
