"""The Slack adapter: slack-bolt's `AsyncApp`, over HTTP (signed requests) or Socket Mode.

Acknowledge once the request is safe: each listener stores the request in the durable intake (bots/intake.py)
and then acks, in milliseconds, even when hundreds of prompts arrive at once and admission (prompt moderation)
needs seconds for them. The intake then hands each request to `SlackRequestHandler` (bots/slack/handling.py),
which translates it into conversation calls; the conversation answers through `SlackReplier`/`SlackModerators`
(bots/slack/replies.py). So every request Slack saw acknowledged is handled, even after a crash, and a request
Slack retries or someone replays (same event id or trigger id) is acknowledged and otherwise ignored.

Lifecycle, as `imagine serve` runs it: `SlackAdapter(settings, conversation)` registers the platform;
`await adapter.start()` opens the intake and resumes stored requests before it takes new ones (HTTP server or
socket); `await conversation.start()` follows the jobs resumed from the journal; `await adapter.close()` on the
way out.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots import messages
from bots.contract import AdapterLifecycle
from bots.conversation import Conversation
from bots.intake import Intake
from bots.process_tuning import LISTEN_BACKLOG
from bots.slack import blocks
from bots.slack.handling import BUTTON, COMMAND, DIRECT_MESSAGE, MENTION, PLATFORM, SlackRequestHandler
from bots.slack.moderators import ModeratorCheck
from bots.slack.replies import SlackModerators, SlackPlace, SlackReplier
from bots.slack.retries import ConnectionErrorRetryHandler, RepeatableServerErrorRetryHandler
from config.settings import ConfigError, Settings, SlackSettings
from engine.requests import Requester
from storage.database import Database

log = logging.getLogger(__name__)

SLASH_COMMAND = "/imagine"
STYLES_COMMAND = "/imagine-styles"
SETTINGS_COMMAND = "/imagine-settings"
EVENTS_PATH = "/slack/events"
BUTTON_ACTIONS = re.compile(r"^imagine:")
OTHER_COMMANDS = re.compile(r"^(?!/imagine(?:-styles|-settings)?$)")
"""Slash commands this app does not have (left over from an older setup, or another deployment's)."""
OTHER_EVENTS = re.compile(r"")
"""Event types nobody listens to: acknowledged, so that Slack does not retry them."""
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
RATE_LIMIT_RETRIES = 3
AUTH_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "not_allowed_token_type"}
)
"""Web API answers that mean a token is wrong (not that Slack is having a bad moment)."""
NOT_STORED = ("token",)
"""Payload fields never written to disk: Slack's legacy verification token."""

Ack = Callable[..., Awaitable[Any]]


def check_slack_settings(config: SlackSettings) -> None:
    """Raise ConfigError naming the environment variable to set when a needed secret is missing."""
    if not config.bot_token:
        raise ConfigError("slack.bot_token is empty: set IMAGINE_SLACK__BOT_TOKEN (xoxb-...)")
    if config.mode == "http" and not config.signing_secret:
        raise ConfigError("slack.signing_secret is empty: set IMAGINE_SLACK__SIGNING_SECRET (slack.mode = http)")
    if config.mode == "socket" and not config.app_token:
        raise ConfigError("slack.app_token is empty: set IMAGINE_SLACK__APP_TOKEN (xapp-..., slack.mode = socket)")


def request_key(body: dict[str, Any]) -> str | None:
    """What makes a request unique to Slack: the event id, or the trigger id of a command or a click."""
    if body.get("type") == "event_callback" and body.get("event_id"):
        return f"event:{body['event_id']}"
    if body.get("command") and body.get("trigger_id"):
        return f"command:{body['trigger_id']}"
    if body.get("type") == "block_actions" and body.get("trigger_id"):
        return f"action:{body['trigger_id']}"
    return None


OBJECT_FIELDS = ("team", "user", "channel", "container", "message", "enterprise", "event", "view", "state")
TEXT_FIELDS = ("type", "command", "callback_id", "trigger_id", "user_id", "channel_id", "team_id", "event_id")


def malformed(body: Any) -> str | None:
    """Why a signed request cannot go to bolt, or None. Bolt's matchers and middleware take Slack's shapes for
    granted (a click's action_id is a string, `user` is an object...) and answer 500 with a stack otherwise."""
    if not isinstance(body, dict):
        return f"the body is a {type(body).__name__}, not an object"
    for name in OBJECT_FIELDS:
        if name in body and not isinstance(body[name], dict | None):
            return f"{name!r} is not an object"
    for name in TEXT_FIELDS:
        if name in body and not isinstance(body[name], str | None):
            return f"{name!r} is not text"
    if "actions" in body:
        actions = body["actions"]
        if (
            not isinstance(actions, list)
            or not actions
            or not all(
                isinstance(a, dict) and isinstance(a.get("action_id"), str) and isinstance(a.get("block_id", ""), str)
                for a in actions
            )
        ):
            return "'actions' is not a list of actions"
    event = body.get("event")
    if body.get("type") == "event_callback" and not (isinstance(event, dict) and isinstance(event.get("type"), str)):
        return "an event_callback without an event type"
    if isinstance(event, dict) and not all(
        isinstance(event.get(name), str | None) for name in ("type", "subtype", "user", "channel", "bot_id", "text")
    ):
        return "an event with fields that are not text"
    return None


def _raise_if_rejected(error: SlackApiError, key: str, variable: str) -> None:
    code = str(error.response.get("error", ""))
    if code in AUTH_ERRORS:
        raise ConfigError(f"Slack rejected {key} ({code}): check {variable}") from None


class SlackAdapter(AdapterLifecycle):
    """With `slack.port = 0` the bound port is in `adapter.port` after start()."""

    def __init__(self, settings: Settings, conversation: Conversation, *, database: Database | None = None) -> None:
        """`database`: the service's shared one; without it the adapter connects one of its own in start()."""
        self.config = settings.slack
        check_slack_settings(self.config)
        self.client = AsyncWebClient(
            token=self.config.bot_token,
            base_url=self.config.api_base,
            retry_handlers=[
                ConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
                RepeatableServerErrorRetryHandler(),
            ],
        )
        self.moderators = (
            SlackModerators(self.client, self.config.moderator_channel_id) if self.config.moderator_channel_id else None
        )
        moderator_check = ModeratorCheck(
            self.client, self.config.moderator_user_ids, self.config.moderator_usergroup_id
        )
        handler = SlackRequestHandler(
            self.client,
            conversation,
            self.moderators,
            moderator_check,
            file_origins=tuple(settings.image_prompts.slack_file_origins),
        )
        self._database = database or Database(settings.store.url)
        self._owns_database = database is None
        self.intake = Intake(self._database, PLATFORM, handler)
        self.app = self._build_app()
        # Only HTTP requests are signed (Socket Mode needs no signing secret, and SignatureVerifier refuses "").
        self._verifier = SignatureVerifier(self.config.signing_secret) if self.config.mode == "http" else None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self.port: int | None = None
        self._conversation = conversation

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        # One pooled HTTP session for every Web API call (without it slack_sdk opens one per request).
        self._session = aiohttp.ClientSession()
        self.client.session = self._session
        await self._check_bot_token()
        if self._owns_database:
            await self._database.connect()
        # Stored before Slack can send anything, acked only once stored (_store_then_ack). The platform is
        # registered first, so the handler can reply at once: hand over what waits.
        self._conversation.add_platform(PLATFORM, self.replier_for, self.moderators)
        await self.intake.open()
        await self.intake.resume()
        if self.config.mode == "socket":
            self._socket = AsyncSocketModeHandler(self.app, self.config.app_token, web_client=self.client)
            # The handler would retry a rejected app token forever: ask for the socket URL ourselves first.
            self._socket.client.wss_uri = await self._socket_url()
            await self._socket.connect_async()
            log.info("Slack adapter connected over Socket Mode")
            return
        web_app = web.Application()
        web_app.add_routes([web.post(EVENTS_PATH, self._handle_http)])
        self._runner = web.AppRunner(web_app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=LISTEN_BACKLOG)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("Slack adapter listening on http://%s:%s%s", self.config.host, self.port, EVENTS_PATH)

    async def close(self) -> None:
        """Stop taking requests, stop handling stored ones (they resume at the next start), close connections."""
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.intake.close()
        if self._owns_database:
            await self._database.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _check_bot_token(self) -> None:
        try:
            await self.client.auth_test()
        except SlackApiError as error:
            _raise_if_rejected(error, "slack.bot_token", "IMAGINE_SLACK__BOT_TOKEN")
            log.warning("could not check the Slack bot token (%s); going on", error.response.get("error"))
        except aiohttp.ClientError as error:  # Slack unreachable right now: requests will tell
            log.warning("could not reach Slack to check the bot token (%r); going on", error)

    async def _socket_url(self) -> str:
        try:
            response = await self.client.apps_connections_open(app_token=self.config.app_token)
        except SlackApiError as error:
            _raise_if_rejected(error, "slack.app_token", "IMAGINE_SLACK__APP_TOKEN")
            raise
        return str(response["url"])

    # ---- what the conversation layer calls -------------------------------------------------------------------

    def replier_for(self, context: dict[str, Any]) -> SlackReplier:
        """Rebuild a replier from a journaled delivery context (after a restart, or for a held prompt)."""
        return SlackReplier(self.client, SlackPlace.from_context(context))

    # ---- HTTP transport ----------------------------------------------------------------------------------

    async def _handle_http(self, request: web.Request) -> web.Response:
        # Check the signature before anything parses the body: bolt parses first and would answer a tampered,
        # unparsable body with a 500 and a traceback in the log. (Bolt checks the signature again, as usual.)
        if not self._signed_by_slack(await request.read(), request.headers):
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            bolt_request = await to_bolt_request(request)
            problem = malformed(bolt_request.body)
        except Exception as error:  # signed, but not JSON/form as announced, or not an object: bolt cannot read it
            problem = f"a body that could not be parsed ({type(error).__name__})"
        if problem is not None:
            log.warning("refused a signed Slack request: %s", problem)
            return web.json_response({"error": "bad request"}, status=400)
        return await to_aiohttp_response(await self.app.async_dispatch(bolt_request))

    def _signed_by_slack(self, body: bytes, headers: Mapping[str, str]) -> bool:
        if self._verifier is None:
            return False
        try:
            return self._verifier.is_valid(body, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER))
        except ValueError:  # a timestamp that is not a number, a body that is not UTF-8
            return False

    # ---- bolt listeners: store, then ack -------------------------------------------------------------------

    def _build_app(self) -> AsyncApp:
        app = AsyncApp(
            client=self.client,
            signing_secret=self.config.signing_secret or None,
            # Socket Mode requests come over our own authenticated websocket and carry no signature.
            request_verification_enabled=self.config.mode == "http",
            # Run each listener to its end before answering: it acks only once the request is stored (and
            # bolt then starts no untracked background task for it).
            process_before_response=True,
            logger=logging.getLogger("slack_bolt"),
        )
        app.command(SLASH_COMMAND)(self._on_command)
        app.command(STYLES_COMMAND)(self._on_styles)
        app.command(SETTINGS_COMMAND)(self._on_settings)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.action(BUTTON_ACTIONS)(self._on_button)
        app.command(OTHER_COMMANDS)(self._on_other_command)
        app.event(OTHER_EVENTS)(self._on_other_event)
        app.error(self._on_error)
        return app

    async def _on_command(self, ack: Ack, body: dict[str, Any]) -> None:
        await self._store_then_ack(ack, COMMAND, body)

    async def _on_styles(self, ack: Ack) -> None:
        """`/imagine-styles`: the presets, answered privately in the acknowledgement."""
        await ack(text=blocks.escape(self._conversation.styles_text()))

    async def _on_settings(self, ack: Ack, body: dict[str, Any]) -> None:
        """`/imagine-settings [key value]` by a workspace admin: changed and summarised privately. The change
        is stored before the acknowledgement, which carries the answer."""
        user, team = _text(body.get("user_id")), _text(body.get("team_id"))
        key, _, value = _text(body.get("text")).strip().partition(" ")
        requester = Requester(platform=PLATFORM, user_id=user, server_id=team, channel_id=_text(body.get("channel_id")))
        answer = await self._conversation.settings_desk.answer(requester, await self._is_admin(user), key, value)
        await ack(text=blocks.escape(answer))

    async def _is_admin(self, user_id: str) -> bool:
        """A workspace admin or owner, as `users.info` says; when Slack cannot say, nobody is (fail closed)."""
        if not user_id:
            return False
        try:
            response = await self.client.users_info(user=user_id)
        except SlackApiError as error:
            log.warning("could not look up Slack user %s: %s", user_id, error.response.get("error"))
            return False
        profile = response.get("user") or {}
        return bool(profile.get("is_admin") or profile.get("is_owner") or profile.get("is_primary_owner"))

    async def _on_mention(self, ack: Ack, event: dict[str, Any], body: dict[str, Any]) -> None:
        if not event.get("user"):
            await ack()
            return
        await self._store_then_ack(ack, MENTION, body)

    async def _on_message(self, ack: Ack, event: dict[str, Any], body: dict[str, Any]) -> None:
        # Only what a person types to the app in its DM (with a file shared: an image prompt); edits, joins and bot
        # posts carry another subtype or a bot_id.
        typed = event.get("subtype") in (None, "file_share")
        if event.get("channel_type") != "im" or not typed or event.get("bot_id") or not event.get("user"):
            await ack()
            return
        await self._store_then_ack(ack, DIRECT_MESSAGE, body)

    async def _on_button(self, ack: Ack, body: dict[str, Any]) -> None:
        await self._store_then_ack(ack, BUTTON, body)

    async def _on_other_command(self, ack: Ack, body: dict[str, Any]) -> None:
        log.warning("answered an unknown Slack command %.40r", body.get("command"))
        await ack(text=messages.UNKNOWN_COMMAND)

    async def _on_other_event(self, ack: Ack, event: dict[str, Any]) -> None:
        log.debug("ignoring a Slack event of type %.40r", event.get("type"))
        await ack()

    async def _store_then_ack(self, ack: Ack, kind: str, body: dict[str, Any]) -> None:
        """If storing fails this raises, bolt answers 500, and Slack retries or tells the user: never an ack
        for a request that could be lost."""
        key = request_key(body) or f"unkeyed:{uuid.uuid4().hex}"
        stored = {name: value for name, value in body.items() if name not in NOT_STORED}
        async with self.intake.taking(key, kind, stored) as new:
            if not new:
                log.info("ignoring a repeated Slack request %s", key)
            await ack()

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error("Slack listener failed for a %s request: %r", body.get("type") or body.get("command"), error)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
