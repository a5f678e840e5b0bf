"""The Slack adapter: slack-bolt's `AsyncApp`, over HTTP (signed requests) or Socket Mode.

It only translates: `/imagine`, a mention of the app in a channel, or a direct message becomes an
`ImagineCommand`; a click on an `imagine:` button becomes `Conversation.press`; the conversation layer answers
through `SlackReplier` / `SlackModerators` (bots/slack_replies.py).

Acknowledge after journaling: a listener hands the command to the conversation layer (admission, then the job
store) and only then acks, well inside Slack's 3 seconds. So a command Slack saw acknowledged survives a crash,
and one that was not acknowledged is retried by Slack. Retried or replayed requests (same `trigger_id` or
`event_id`) are acknowledged and otherwise ignored, so a retry never starts a second job.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots import messages
from bots.buttons import Action, BadButton, parse_button
from bots.conversation import Conversation, ImagineCommand
from bots.slack_moderators import ModeratorCheck
from bots.slack_replies import SlackModerators, SlackPlace, SlackReplier
from bots.slack_text import BadOptions, parse_prompt_text
from config.settings import ConfigError, Settings, SlackSettings
from engine.requests import Requester

log = logging.getLogger(__name__)

PLATFORM = "slack"
SLASH_COMMAND = "/imagine"
EVENTS_PATH = "/slack/events"
BUTTON_ACTIONS = re.compile(r"^imagine:")
# Slack's signatures are valid for 5 minutes; a replay older than that is refused before it gets here.
REPLAY_WINDOW_S = 600.0
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
RATE_LIMIT_RETRIES = 3

Ack = Callable[..., Awaitable[Any]]


def slack_configured(settings: Settings) -> bool:
    return bool(settings.slack.bot_token)


def check_slack_settings(config: SlackSettings) -> None:
    """Raise ConfigError naming the environment variable to set when a needed secret is missing."""
    if not config.bot_token:
        raise ConfigError("slack.bot_token is empty: set IMAGINE_SLACK__BOT_TOKEN (xoxb-...)")
    if config.mode == "http" and not config.signing_secret:
        raise ConfigError("slack.signing_secret is empty: set IMAGINE_SLACK__SIGNING_SECRET (slack.mode = http)")
    if config.mode == "socket" and not config.app_token:
        raise ConfigError("slack.app_token is empty: set IMAGINE_SLACK__APP_TOKEN (xapp-..., slack.mode = socket)")


class RecentRequests:
    """Keys of requests seen in the last `window_s` seconds (Slack retries and replays within it)."""

    def __init__(self, window_s: float = REPLAY_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, key: str) -> bool:
        now = self._clock()
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        self._seen[key] = now + self._window_s
        return True


def request_key(body: dict[str, Any]) -> str | None:
    """What makes a request unique to Slack: the event id, or the trigger id of a command or a click."""
    if body.get("type") == "event_callback" and body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("command") and body.get("trigger_id"):
        return f"command:{body['trigger_id']}"
    if body.get("type") == "block_actions" and body.get("trigger_id"):
        return f"action:{body['trigger_id']}"
    return None


class SlackAdapter:
    """`adapter = SlackAdapter(settings, conversation)` (registers the platform), `await adapter.start()`,
    `await adapter.close()`. With `slack.port = 0` the bound port is in `adapter.port` after start()."""

    def __init__(self, settings: Settings, conversation: Conversation) -> None:
        self.config = settings.slack
        check_slack_settings(self.config)
        self.conversation = conversation
        self.client = AsyncWebClient(
            token=self.config.bot_token,
            base_url=self.config.api_base,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            ],
        )
        self.moderators = (
            SlackModerators(self.client, self.config.moderator_channel_id)
            if self.config.moderator_channel_id else None
        )
        self.is_moderator = ModeratorCheck(
            self.client, self.config.moderator_user_ids, self.config.moderator_usergroup_id
        )
        self.app = self._build_app()
        self._verifier = SignatureVerifier(self.config.signing_secret)
        self._recent = RecentRequests()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self.port: int | None = None
        conversation.add_platform(PLATFORM, self.replier_for, self.moderators)

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        # One pooled HTTP session for every Web API call (without it slack_sdk opens one per request).
        self._session = aiohttp.ClientSession()
        self.client.session = self._session
        if self.config.mode == "socket":
            self._socket = AsyncSocketModeHandler(self.app, self.config.app_token, web_client=self.client)
            await self._socket.connect_async()
            log.info("Slack adapter connected over Socket Mode")
            return
        web_app = web.Application()
        web_app.add_routes([web.post(EVENTS_PATH, self._handle_http)])
        self._runner = web.AppRunner(web_app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("Slack adapter listening on http://%s:%s%s", self.config.host, self.port, EVENTS_PATH)

    async def close(self) -> None:
        """Stop taking requests, then close the connections. Jobs stay with the engine and its journal."""
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _handle_http(self, request: web.Request) -> web.Response:
        # Check the signature before anything parses the body: bolt parses first and would answer a tampered,
        # unparsable body with a 500 and a traceback in the log. (Bolt checks the signature again, as usual.)
        if not self._signed_by_slack(await request.read(), request.headers):
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            bolt_request = await to_bolt_request(request)
        except ValueError:  # signed by Slack but not JSON/form as announced
            log.warning("a signed Slack request had a body that could not be parsed")
            return web.json_response({"error": "bad request"}, status=400)
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    def _signed_by_slack(self, body: bytes, headers: Mapping[str, str]) -> bool:
        try:
            return self._verifier.is_valid(body, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER))
        except ValueError:  # a timestamp that is not a number, a body that is not UTF-8
            return False

    # ---- what the conversation layer calls -------------------------------------------------------------------

    def replier_for(self, context: dict[str, Any]) -> SlackReplier:
        """Rebuild a replier from a journaled delivery context (after a restart, or for a held prompt)."""
        return SlackReplier(self.client, SlackPlace.from_context(context))

    # ---- bolt wiring -------------------------------------------------------------------------------------

    def _build_app(self) -> AsyncApp:
        app = AsyncApp(
            client=self.client,
            signing_secret=self.config.signing_secret or None,
            # Socket Mode requests come over our own authenticated websocket and carry no signature.
            request_verification_enabled=self.config.mode == "http",
            # Run each listener to its end before answering: the listener acks after journaling the command
            # (and bolt then starts no background task of its own for it).
            process_before_response=True,
            logger=logging.getLogger("slack_bolt"),
        )
        app.middleware(self._drop_repeats)
        app.command(SLASH_COMMAND)(self._on_command)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.action(BUTTON_ACTIONS)(self._on_button)
        app.error(self._on_error)
        return app

    async def _drop_repeats(self, body: dict[str, Any], next: Callable[[], Awaitable[BoltResponse]],
                            request: AsyncBoltRequest) -> BoltResponse | None:
        key = request_key(body)
        if key is not None and not self._recent.first_time(key):
            retry = request.headers.get("x-slack-retry-num", [None])[0]
            log.info("ignoring a repeated Slack request %s (retry %s)", key, retry or "-")
            return BoltResponse(status=200, body="")
        return await next()

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("Slack listener failed for a %s request: %r", body.get("type") or body.get("command"), error)

    # ---- listeners: platform request → neutral call --------------------------------------------------------

    async def _on_command(self, ack: Ack, command: dict[str, Any]) -> None:
        place = SlackPlace(channel=command["channel_id"], user=command["user_id"])
        requester = self._requester(place, command.get("team_id", ""), command.get("user_name", ""))
        await self._imagine(ack, command.get("text", ""), place, requester)

    async def _on_mention(self, ack: Ack, event: dict[str, Any], body: dict[str, Any]) -> None:
        if not event.get("user"):
            await ack()
            return
        # Answer in the thread of the mention, so a busy channel is not flooded.
        thread = event.get("thread_ts") or event["ts"]
        place = SlackPlace(channel=event["channel"], user=event["user"], thread_ts=thread)
        requester = self._requester(place, body.get("team_id", ""))
        await self._imagine(ack, event.get("text", ""), place, requester)

    async def _on_message(self, ack: Ack, event: dict[str, Any], body: dict[str, Any]) -> None:
        # Only what a person types to the app in its DM; edits, joins and bot posts carry a subtype or bot_id.
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id") or not event.get("user"):
            await ack()
            return
        place = SlackPlace(channel=event["channel"], user=event["user"], thread_ts=event.get("thread_ts"))
        requester = self._requester(place, body.get("team_id", ""))
        await self._imagine(ack, event.get("text", ""), place, requester)

    async def _imagine(self, ack: Ack, text: str, place: SlackPlace, requester: Requester) -> None:
        replier = SlackReplier(self.client, place)
        try:
            options = parse_prompt_text(text)
        except BadOptions as error:
            await self._refuse(replier, messages.invalid_request(str(error)))
            await ack()
            return
        command = ImagineCommand(prompt=options.prompt, requester=requester, negative_prompt=options.negative_prompt,
                                 seed=options.seed, aspect=options.aspect, delivery=place.to_context())
        try:
            await self.conversation.imagine(command, replier)
        except Exception:
            log.exception("could not take a Slack /imagine from %s", requester.key)
            await self._refuse(replier, messages.SOMETHING_WENT_WRONG)
        finally:
            await ack()

    async def _on_button(self, ack: Ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        try:
            await self._press(body, action)
        except Exception:
            log.exception("a Slack button press failed")
        finally:
            await ack()

    async def _press(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        custom_id = str(action.get("action_id", ""))
        try:
            button = parse_button(custom_id)
        except BadButton as error:
            log.warning("ignoring a click on an unknown Slack button: %s", error)
            return
        container = body.get("container") or {}
        channel = container.get("channel_id") or (body.get("channel") or {}).get("id", "")
        message_ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        user_id = body["user"]["id"]
        thread_ts = container.get("thread_ts") or (body.get("message") or {}).get("thread_ts")
        if not thread_ts and not channel.startswith("D"):
            thread_ts = message_ts  # a click on a top-level channel message: answer in its thread
        place = SlackPlace(channel=channel, user=user_id, thread_ts=thread_ts)
        team = (body.get("team") or {}).get("id", "")
        requester = self._requester(place, team, (body.get("user") or {}).get("username", ""))
        deciding = button.action in (Action.APPROVE, Action.REJECT)
        if deciding and self.moderators is not None and message_ts:
            self.moderators.remember(button.target, channel, message_ts)
        is_moderator = await self.is_moderator(user_id) if deciding else False
        # New jobs from this click (variations, reroll) are answered where the click happened.
        await self.conversation.press(custom_id, requester, SlackReplier(self.client, place),
                                      is_moderator=is_moderator, delivery=place.to_context())

    @staticmethod
    async def _refuse(replier: SlackReplier, text: str) -> None:
        try:
            await replier.refuse(text)
        except Exception as error:  # Slack itself is failing: nothing more to tell the user
            log.warning("could not tell a Slack user that their request was refused: %r", error)

    @staticmethod
    def _requester(place: SlackPlace, team_id: str, display_name: str = "") -> Requester:
        return Requester(platform=PLATFORM, user_id=place.user, server_id=team_id, channel_id=place.channel,
                         display_name=display_name)


async def run_slack(settings: Settings, conversation: Conversation) -> SlackAdapter:
    """For `imagine serve`: a started adapter (close it with `await adapter.close()`)."""
    adapter = SlackAdapter(settings, conversation)
    await adapter.start()
    return adapter
