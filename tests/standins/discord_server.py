"""A stand-in Discord: REST v10 and gateway v10 on 127.0.0.1, enough for discord.py 2.7 to log in, sync
commands, receive interactions and messages, answer them, post files and reconnect.

It records every REST request (method, path, query, headers, JSON, multipart parts with their bytes) and keeps
the messages it holds, so tests can assert on what a user would see. Tests inject gateway events
(`send_command`, `click`, `send_dm`), failures (`fail_next`: 429 with rate-limit headers, 500, or a connection
closed without an answer, optionally after the request took effect), gateway reconnects
(`gateway.request_reconnect`, `gateway.drop_connection`) and token expiry (`expire_interaction_tokens`), a command
sync that is held unanswered (`hold_command_sync`), and observers that see each request before it is answered
(`before_request`). Behaviour modelled on the real API where a bot can get it wrong:
- the first followup after a deferred response edits the deferred "thinking" message and keeps its flags
  (an ephemeral flag on it is ignored), later followups are new messages;
- an interaction must be acknowledged once, within `ack_deadline_s`, before its webhook works; its token dies
  after 15 minutes;
- `nonce` + `enforce_nonce` on a channel message returns the earlier message by the same author with that nonce
  instead of posting twice (Discord: "checked for uniqueness in the past few minutes"; here, for the run);
- message history (GET /channels/{id}/messages) newest first, with `limit` and `after`;
- JSON responses carry `Content-Type: application/json` exactly."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from tests.standins import PLATFORM_LISTEN_BACKLOG
from tests.standins.discord_gateway import Gateway
from tests.standins.discord_oauth import DiscordOAuth
from tests.standins.discord_payloads import (
    APPLICATION_COMMAND,
    APPLICATION_COMMAND_AUTOCOMPLETE,
    CALLBACK_AUTOCOMPLETE_RESULT,
    CALLBACK_DEFERRED_MESSAGE,
    CALLBACK_DEFERRED_UPDATE,
    CALLBACK_MESSAGE,
    CALLBACK_PONG,
    CALLBACK_UPDATE,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    MANAGE_GUILD,
    MEMBER_PERMISSIONS,
    MESSAGE_COMPONENT,
    Guild,
    Role,
    SnowflakeFactory,
    User,
    attachment_payload,
    command_options,
    dm_channel_payload,
    find_component,
    guild_channel_payload,
    interaction_payload,
    member_payload,
    message_payload,
    now_iso,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

API_PREFIX = "/api/v10"
INTERACTION_TOKEN_LIFETIME_S = 15 * 60


@dataclass(frozen=True)
class StandInAttachment:
    """A file a user attached, as Discord describes it: where its CDN serves it (tests/standins/file_cdn.py) and
    the size and type Discord announces (which a test may make lie)."""

    url: str
    filename: str
    size: int
    content_type: str | None = "image/png"


@dataclass(frozen=True)
class UploadedFile:
    field_name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    method: str
    path: str
    """Without the /api/v10 prefix, e.g. /channels/123/messages."""
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None
    """The JSON body, or a multipart request's payload_json."""
    files: list[UploadedFile] = field(default_factory=list)
    status: int = 0


RECORD = web.RequestKey("record", RecordedRequest)


@dataclass
class StoredMessage:
    payload: dict[str, Any]
    files: list[UploadedFile] = field(default_factory=list)
    deleted: bool = False
    edits: int = 0

    @property
    def id(self) -> str:
        return str(self.payload["id"])

    @property
    def content(self) -> str:
        return str(self.payload.get("content") or "")

    @property
    def ephemeral(self) -> bool:
        return bool(self.payload["flags"] & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.payload["flags"] & FLAG_LOADING)

    @property
    def custom_ids(self) -> list[str]:
        return [
            component["custom_id"]
            for row in self.payload.get("components", [])
            for component in row.get("components", [])
            if "custom_id" in component
        ]


@dataclass
class InteractionRecord:
    id: str
    token: str
    user: User
    channel_id: str
    guild_id: str | None
    payload: dict[str, Any]
    sent_at: float = 0.0
    """perf_counter() when the INTERACTION_CREATE frame went out."""
    acked_at: float | None = None
    callback_type: int | None = None
    original_message_id: str | None = None
    expired: bool = False
    choices: list[dict[str, Any]] | None = None
    """An autocomplete's answer (callback type 8): the choices offered."""

    @property
    def ack_latency_s(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.sent_at


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    retry_after: float
    commit: bool
    uploads_only: bool


DROP_CONNECTION = 0
"""`fail_next` status: close the connection without an answer (the client sees it drop mid-request)."""


def _json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly application/json: discord.py's json_or_text() only parses that content type.
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def _error(status: int, code: int, message: str) -> web.Response:
    return _json_response({"message": message, "code": code}, status=status)


class DiscordStandIn:
    """Start with `async with DiscordStandIn() as discord:`; point discord.py at `api_base` and `gateway_url`."""

    def __init__(
        self,
        *,
        token: str = "standin-bot-token",
        heartbeat_interval_ms: int = 41_250,
        ack_deadline_s: float | None = 3.0,
    ) -> None:
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.ack_deadline_s = ack_deadline_s
        self.snowflake = SnowflakeFactory()
        self.bot = User(id=self.snowflake(), username="imagine", bot=True)
        self.application_id = self.bot.id
        self.moderator_role = Role(id=self.snowflake(), name="moderators")
        self.member_role = Role(id=self.snowflake(), name="members")
        self.channel_id = self.snowflake()
        self.moderator_channel_id = self.snowflake()
        self.other_channel_id = self.snowflake()
        """A third channel (a server's own review channel, a channel where the bot is not allowed...)."""
        self.guild = Guild(
            id=self.snowflake(),
            name="Test Guild",
            channel_ids=[self.channel_id, self.moderator_channel_id, self.other_channel_id],
            roles=[self.moderator_role, self.member_role],
        )
        self.requests: list[RecordedRequest] = []
        self.messages: dict[str, StoredMessage] = {}
        self.oauth = DiscordOAuth()
        """The OAuth2 provider (sign-in with Discord), on this same origin."""
        self.members: dict[str, tuple[User, list[str]]] = {}
        """Guild members the REST API knows (GET /guilds/{guild}/members/{user}): user id -> (user, role ids)."""
        self.interactions: dict[str, InteractionRecord] = {}
        self.synced_commands: list[dict[str, Any]] = []
        self.forbidden_channel_ids: set[str] = set()
        """Channels the bot may not see (403 50001 Missing Access), as after losing View Channel."""
        self.closed_dm_user_ids: set[str] = set()
        """Users who accept no DMs from the bot: posting in their DM answers 403 50007, as Discord does."""
        self._dm_channels: dict[str, tuple[str, User]] = {}  # user id -> (channel id, user)
        self._nonces: dict[tuple[str, str], str] = {}
        self._failures: list[_Failure] = []
        self._sync_released = asyncio.Event()
        self._sync_released.set()
        self.sync_requests = 0
        """Command syncs (PUT /applications/{app}/commands) received, answered or still held."""
        self._observers: list[Callable[[RecordedRequest], None]] = []
        self._changed = asyncio.Event()
        self.gateway = Gateway(token, heartbeat_interval_ms, self._welcome, self._notify)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> DiscordStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record_middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/resume", self.gateway.handle)  # the resume_gateway_url READY hands out
        api = API_PREFIX
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("PUT", "/applications/{app}/commands", self._put_commands),
            ("GET", "/applications/{app}/commands", self._get_commands),
            ("POST", "/interactions/{id}/{token}/callback", self._interaction_callback),
            ("POST", "/webhooks/{app}/{token}", self._webhook_execute),
            ("GET", "/webhooks/{app}/{token}/messages/{message}", self._webhook_get_message),
            ("PATCH", "/webhooks/{app}/{token}/messages/{message}", self._webhook_edit_message),
            ("DELETE", "/webhooks/{app}/{token}/messages/{message}", self._webhook_delete_message),
            ("POST", "/channels/{channel}/messages", self._channel_create_message),
            ("GET", "/channels/{channel}/messages", self._channel_list_messages),
            ("GET", "/channels/{channel}/messages/{message}", self._channel_get_message),
            ("PATCH", "/channels/{channel}/messages/{message}", self._channel_edit_message),
            ("DELETE", "/channels/{channel}/messages/{message}", self._channel_delete_message),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/users/@me/guilds", self._get_my_guilds),
            ("GET", "/guilds/{guild}/members/{user}", self._get_member),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, api + path, handler)
        self.oauth.add_routes(app, api)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=PLATFORM_LISTEN_BACKLOG)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self._sync_released.set()  # a held sync would keep its request open through the cleanup
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------------ waiting and looking

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], T], limit_s: float = 30.0, what: str = "") -> T:
        """Re-check `predicate` whenever the stand-in's state changes; return its first truthy value."""
        try:
            async with asyncio.timeout(limit_s):
                while True:
                    changed = self._changed
                    result = predicate()
                    if result:
                        return result
                    await changed.wait()
        except TimeoutError:
            recent = [f"{r.method} {r.path} -> {r.status}" for r in self.requests[-15:]]
            raise AssertionError(f"timed out waiting for {what or predicate}; last requests: {recent}") from None

    def requests_to(self, method: str, pattern: str) -> list[RecordedRequest]:
        regex = re.compile(pattern)
        return [r for r in self.requests if r.method == method and regex.fullmatch(r.path)]

    def channel_messages(self, channel_id: str, *, include_deleted: bool = False) -> list[StoredMessage]:
        return [
            m
            for m in self.messages.values()
            if m.payload["channel_id"] == channel_id and (include_deleted or not m.deleted)
        ]

    def messages_with_files(self, channel_id: str | None = None) -> list[StoredMessage]:
        return [
            m
            for m in self.messages.values()
            if m.files and not m.deleted and (channel_id is None or m.payload["channel_id"] == channel_id)
        ]

    def dm_channel_id(self, user: User) -> str:
        if user.id not in self._dm_channels:
            self._dm_channels[user.id] = (self.snowflake(), user)
        return self._dm_channels[user.id][0]

    def make_user(self, name: str) -> User:
        return User(id=self.snowflake(), username=name)

    def add_member(self, user: User, role_ids: list[str] | None = None) -> None:
        """Make `user` a member of the guild with these roles, as the REST API reports it."""
        self.members[user.id] = (user, list(role_ids or []))

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_log(self) -> list[tuple[str, Any]]:
        return self.gateway.log

    @property
    def identify_count(self) -> int:
        return self.gateway.identify_count

    @property
    def resume_count(self) -> int:
        return self.gateway.resume_count

    # ------------------------------------------------------------------ injecting

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float = 0.05,
        commit: bool = False,
        uploads_only: bool = False,
    ) -> None:
        """Answer the next `times` matching requests with `status` (429 carries rate-limit headers), or with
        `DROP_CONNECTION` close the connection unanswered. With `commit`, the request takes effect first and
        only the response is lost, like a timeout after the write. With `uploads_only`, only requests that
        carry files match."""
        self._failures.append(
            _Failure(method, re.compile(path_pattern), status, times, retry_after, commit, uploads_only)
        )

    def clear_failures(self) -> None:
        self._failures.clear()

    def hold_command_sync(self) -> None:
        """Leave command syncs unanswered until `release_command_sync()`: a bot that syncs after READY then
        runs with its gateway up and its sync pending for as long as a test needs."""
        self._sync_released.clear()

    def release_command_sync(self) -> None:
        self._sync_released.set()

    def before_request(self, observer: Callable[[RecordedRequest], None]) -> None:
        """Call `observer` with every REST request (body read) before it is handled or answered."""
        self._observers.append(observer)

    def expire_interaction_tokens(self) -> None:
        """Every interaction token issued so far is now older than 15 minutes."""
        for record in self.interactions.values():
            record.expired = True

    async def send_command(
        self,
        user: User,
        options: dict[str, Any],
        *,
        in_guild: bool = True,
        role_ids: list[str] | None = None,
        name: str = "imagine",
        channel_id: str | None = None,
        attachments: dict[str, StandInAttachment] | None = None,
        manage_server: bool = False,
    ) -> InteractionRecord:
        """Dispatch INTERACTION_CREATE for a slash command, in the guild channel (with `member`, holding Manage
        Server with `manage_server`) or in the user's DM with the bot (with `user`). `attachments`: attachment
        options by name (type 11: the value is the attachment's id, the attachment itself is in
        `data.resolved.attachments`)."""
        command_id = next((c["id"] for c in self.synced_commands if c["name"] == name), self.snowflake())
        data: dict[str, Any] = {"id": command_id, "name": name, "type": 1, "options": command_options(options)}
        for option, attachment in (attachments or {}).items():
            payload = self._attachment_object(attachment)
            data["options"].append({"name": option, "type": 11, "value": payload["id"]})
            data.setdefault("resolved", {}).setdefault("attachments", {})[payload["id"]] = payload
        if in_guild:
            data["guild_id"] = self.guild.id
        permissions = MEMBER_PERMISSIONS | (MANAGE_GUILD if manage_server else 0)
        return await self._send_interaction(
            APPLICATION_COMMAND,
            data,
            user,
            in_guild=in_guild,
            role_ids=role_ids,
            channel_id=channel_id,
            permissions=permissions,
        )

    async def send_autocomplete(
        self, user: User, options: dict[str, Any], focused: str, *, name: str = "imagine"
    ) -> InteractionRecord:
        """Dispatch an autocomplete (interaction type 4): `options` typed so far, `focused` the one being typed.
        The bot's answer (callback type 8) lands in the record's `choices`."""
        command_id = next((c["id"] for c in self.synced_commands if c["name"] == name), self.snowflake())
        typed = command_options(options)
        for option in typed:
            if option["name"] == focused:
                option["focused"] = True
        data = {"id": command_id, "name": name, "type": 1, "options": typed, "guild_id": self.guild.id}
        return await self._send_interaction(
            APPLICATION_COMMAND_AUTOCOMPLETE, data, user, in_guild=True, role_ids=None, channel_id=None
        )

    async def click(
        self, message_id: str, custom_id: str, user: User, *, role_ids: list[str] | None = None
    ) -> InteractionRecord:
        """Dispatch a button click on a message the stand-in holds; the button must be on it."""
        stored = self.messages[message_id]
        component = find_component(stored.payload, custom_id)
        if stored.deleted or component is None or component.get("disabled"):
            raise AssertionError(f"no clickable button {custom_id!r} on message {message_id}")
        in_guild = "guild_id" in stored.payload
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._send_interaction(
            MESSAGE_COMPONENT,
            data,
            user,
            in_guild=in_guild,
            role_ids=role_ids,
            channel_id=stored.payload["channel_id"],
            message=stored,
        )

    async def send_command_data(
        self, user: User, data: dict[str, Any], *, in_guild: bool = True, role_ids: list[str] | None = None
    ) -> InteractionRecord:
        """Dispatch INTERACTION_CREATE for a slash command whose `data` (name, options) is given as it is: for
        commands the bot does not have and options of any type."""
        return await self._send_interaction(
            APPLICATION_COMMAND, data, user, in_guild=in_guild, role_ids=role_ids, channel_id=None
        )

    def add_bot_message(self, custom_ids: list[str], *, in_guild: bool = True, user: User | None = None) -> str:
        """A message of the bot's with one button per custom id (any text: older versions', malformed ones), in
        the guild channel or in `user`'s DM; returns its id, for `click`."""
        channel_id = self.channel_id if in_guild else self.dm_channel_id(user or self.make_user("someone"))
        rows = [custom_ids[start : start + 5] for start in range(0, len(custom_ids), 5)]
        components = [
            {"type": 1, "components": [{"type": 2, "style": 2, "label": "b", "custom_id": c} for c in row]}
            for row in rows
        ]
        message = self._new_message(channel_id, {"content": "", "components": components}, [], webhook=False)
        return message.id

    async def send_dm(self, user: User, content: str, attachments: list[StandInAttachment] | None = None) -> str:
        """Dispatch MESSAGE_CREATE: `user` writes `content` to the bot in their DM (with files attached)."""
        channel_id = self.dm_channel_id(user)
        message = message_payload(message_id=self.snowflake(), channel_id=channel_id, author=user, content=content)
        message["attachments"] = [self._attachment_object(attachment) for attachment in attachments or []]
        self.messages[message["id"]] = StoredMessage(message)
        await self.gateway.dispatch("MESSAGE_CREATE", message)
        return str(message["id"])

    def _attachment_object(self, attachment: StandInAttachment) -> dict[str, Any]:
        return attachment_payload(
            self.snowflake(), attachment.url, attachment.filename, attachment.size, attachment.content_type
        )

    async def _send_interaction(
        self,
        interaction_type: int,
        data: dict[str, Any],
        user: User,
        *,
        in_guild: bool,
        role_ids: list[str] | None,
        channel_id: str | None,
        message: StoredMessage | None = None,
        permissions: int = MEMBER_PERMISSIONS,
    ) -> InteractionRecord:
        if in_guild:
            channel_id = channel_id or self.channel_id
            channel = guild_channel_payload(channel_id, self.guild.id)
        else:
            channel_id = self.dm_channel_id(user)
            channel = dm_channel_payload(channel_id, user)
        record = InteractionRecord(
            id=self.snowflake(),
            token=secrets.token_urlsafe(48),
            user=user,
            channel_id=channel_id,
            guild_id=self.guild.id if in_guild else None,
            payload={},
            original_message_id=message.id if message is not None else None,
        )
        record.payload = interaction_payload(
            interaction_id=record.id,
            token=record.token,
            application_id=self.application_id,
            interaction_type=interaction_type,
            data=data,
            user=user,
            channel=channel,
            guild_id=record.guild_id,
            role_ids=list(role_ids or []),
            message=message.payload if message is not None else None,
            permissions=permissions,
        )
        self.interactions[record.token] = record
        record.sent_at = time.perf_counter()  # re-stamped when the frame actually goes out

        def stamp() -> None:
            record.sent_at = time.perf_counter()

        await self.gateway.dispatch("INTERACTION_CREATE", record.payload, on_send=stamp)
        return record

    def _welcome(self, session_id: str) -> list[tuple[str, dict[str, Any]]]:
        ready = {
            "v": 10,
            "user": self.bot.payload(),
            "guilds": [{"id": self.guild.id, "unavailable": True}],
            "session_id": session_id,
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume",
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
            "shard": [0, 1],
        }
        return [("READY", ready), ("GUILD_CREATE", self.guild.create_payload(self.bot))]

    # ------------------------------------------------------------------ recording, auth, failures

    @web.middleware
    async def _record_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        record = RecordedRequest(
            method=request.method,
            path=request.path[len(API_PREFIX) :],
            query=dict(request.query),
            headers=dict(request.headers),
        )
        record.json, record.files = await _read_body(request)
        request[RECORD] = record
        for observer in self._observers:
            observer(record)
        failure = self._take_failure(record)
        if failure is not None and not failure.commit:
            response: web.StreamResponse = self._failure_response(failure)
        else:
            response = await handler(request)
            if failure is not None:
                response = self._failure_response(failure)
        record.status = response.status if failure is None or failure.status != DROP_CONNECTION else 0
        self.requests.append(record)
        self._notify()
        if record.status == DROP_CONNECTION and request.transport is not None:
            request.transport.abort()  # no answer at all: the client's read fails
            raise web.HTTPInternalServerError()  # never sent: the connection is gone
        return response

    def _take_failure(self, record: RecordedRequest) -> _Failure | None:
        for failure in self._failures:
            if failure.uploads_only and not record.files:
                continue
            if failure.method == record.method and failure.path.fullmatch(record.path):
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _failure_response(self, failure: _Failure) -> web.Response:
        if failure.status != 429:
            return _error(failure.status, 0, "500: Internal Server Error")
        body = {"message": "You are being rate limited.", "retry_after": failure.retry_after, "global": False}
        headers = {
            "Retry-After": str(max(1, round(failure.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + failure.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{failure.retry_after:.3f}",
            "X-RateLimit-Bucket": "standin-bucket",
            "X-RateLimit-Scope": "user",
            "Via": "1.1 google",  # discord.py treats a 429 without Via as a Cloudflare ban and gives up
        }
        return _json_response(body, status=429, headers=headers)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.token}"

    # ------------------------------------------------------------------ REST: identity and commands

    async def _get_me(self, request: web.Request) -> web.Response:
        oauth_user = self.oauth.user_for(request.headers.get("Authorization", ""))
        if oauth_user is not None:  # an OAuth2 access token: the user who signed in
            return _json_response(oauth_user.payload())
        if not self._authorized(request):
            return _error(401, 0, "401: Unauthorized")
        return _json_response(self.bot.payload())

    async def _get_my_guilds(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, 0, "401: Unauthorized")
        guild = {"id": self.guild.id, "name": self.guild.name, "icon": None, "owner": False, "permissions": "0"}
        return _json_response([guild])

    async def _get_member(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, 0, "401: Unauthorized")
        if request.match_info["guild"] != self.guild.id:
            return _error(404, 10004, "Unknown Guild")
        found = self.members.get(request.match_info["user"])
        if found is None:
            return _error(404, 10007, "Unknown Member")
        user, role_ids = found
        return _json_response(member_payload(user, role_ids))

    async def _get_application(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, 0, "401: Unauthorized")
        return _json_response(
            {
                "id": self.application_id,
                "name": "imagine",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": 0,
                "owner": self.make_user("owner").payload(),
                "team": None,
                "bot": self.bot.payload(),
                "interactions_endpoint_url": None,
                "integration_types_config": {"0": {}, "1": {}},
            }
        )

    async def _put_commands(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, 0, "401: Unauthorized")
        if request.match_info["app"] != self.application_id:
            return _error(403, 50001, "Missing Access")
        self.sync_requests += 1
        self._notify()
        await self._sync_released.wait()
        commands = []
        for command in request[RECORD].json:
            commands.append(
                {
                    "type": 1,
                    "nsfw": False,
                    "default_member_permissions": None,
                    **command,
                    "id": self.snowflake(),
                    "application_id": self.application_id,
                    "version": self.snowflake(),
                }
            )
        self.synced_commands = commands
        return _json_response(commands)

    async def _get_commands(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, 0, "401: Unauthorized")
        return _json_response(self.synced_commands)

    # ------------------------------------------------------------------ REST: interactions and webhooks

    async def _interaction_callback(self, request: web.Request) -> web.Response:
        record = self.interactions.get(request.match_info["token"])
        if record is None or record.id != request.match_info["id"]:
            return _error(404, 10062, "Unknown interaction")
        if record.callback_type is not None:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        now = time.perf_counter()
        if self.ack_deadline_s is not None and now - record.sent_at > self.ack_deadline_s:
            return _error(404, 10062, "Unknown interaction")
        body = request[RECORD].json or {}
        callback_type = int(body.get("type", 0))
        data = body.get("data") or {}
        record.acked_at = now
        record.callback_type = callback_type
        message: StoredMessage | None = None
        if callback_type in (CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE):
            flags = int(data.get("flags") or 0) & FLAG_EPHEMERAL
            if callback_type == CALLBACK_DEFERRED_MESSAGE:
                flags |= FLAG_LOADING
            message = self._new_message(
                record.channel_id, {**data, "flags": flags}, request[RECORD].files, webhook=True
            )
            record.original_message_id = message.id
        elif callback_type == CALLBACK_UPDATE:
            message = self.messages[str(record.original_message_id)]
            self._apply_edit(message, data, request[RECORD].files)
        elif callback_type == CALLBACK_DEFERRED_UPDATE:
            message = self.messages.get(str(record.original_message_id))
        elif callback_type == CALLBACK_AUTOCOMPLETE_RESULT:
            if record.payload["type"] != APPLICATION_COMMAND_AUTOCOMPLETE:
                return _error(400, 50035, "Invalid Form Body: autocomplete result for another interaction type")
            choices = list(data.get("choices") or [])
            if len(choices) > 25:
                return _error(400, 50035, "Invalid Form Body: choices: Must be 25 or fewer in length.")
            record.choices = choices
        elif callback_type != CALLBACK_PONG:
            return _error(400, 50035, f"Invalid Form Body: unknown callback type {callback_type}")
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        interaction = {
            "id": record.id,
            "type": record.payload["type"],
            "response_message_id": message.id if message else None,
            "response_message_loading": bool(message and message.loading),
            "response_message_ephemeral": bool(message and message.ephemeral),
        }
        response: dict[str, Any] = {"interaction": interaction}
        if message is not None and callback_type != CALLBACK_DEFERRED_UPDATE:
            response["resource"] = {"type": callback_type, "message": message.payload}
        return _json_response(response)

    def _webhook_interaction(self, request: web.Request) -> InteractionRecord | web.Response:
        record = self.interactions.get(request.match_info["token"])
        if record is None or request.match_info["app"] != self.application_id or record.callback_type is None:
            return _error(404, 10015, "Unknown Webhook")  # a token that never answered has no webhook either
        if record.expired:
            return _error(401, 50027, "Invalid Webhook Token")
        return record

    def _webhook_target(self, request: web.Request, record: InteractionRecord) -> StoredMessage | None:
        wanted = request.match_info["message"]
        message_id = record.original_message_id if wanted == "@original" else wanted
        message = self.messages.get(str(message_id))
        if message is None or message.deleted or message.payload["channel_id"] != record.channel_id:
            return None
        return message

    async def _webhook_execute(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        if isinstance(record, web.Response):
            return record
        body, files = request[RECORD].json or {}, request[RECORD].files
        original = self.messages.get(str(record.original_message_id))
        if original is not None and original.loading and not original.deleted:
            # The first followup after a deferred response replaces the "thinking" message and keeps its flags.
            self._apply_edit(original, {k: v for k, v in body.items() if k != "flags"}, files)
            message = original
        else:
            flags = int(body.get("flags") or 0) & FLAG_EPHEMERAL
            message = self._new_message(record.channel_id, {**body, "flags": flags}, files, webhook=True)
        if request.query.get("wait") in ("1", "true", "True"):
            return _json_response(message.payload)
        return web.Response(status=204)

    async def _webhook_get_message(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        if isinstance(record, web.Response):
            return record
        message = self._webhook_target(request, record)
        return _json_response(message.payload) if message else _error(404, 10008, "Unknown Message")

    async def _webhook_edit_message(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        if isinstance(record, web.Response):
            return record
        message = self._webhook_target(request, record)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        self._apply_edit(message, request[RECORD].json or {}, request[RECORD].files)
        return _json_response(message.payload)

    async def _webhook_delete_message(self, request: web.Request) -> web.Response:
        record = self._webhook_interaction(request)
        if isinstance(record, web.Response):
            return record
        message = self._webhook_target(request, record)
        if message is None:
            return _error(404, 10008, "Unknown Message")
        message.deleted = True
        return web.Response(status=204)

    # ------------------------------------------------------------------ REST: channels and DMs

    def _channel_access(self, request: web.Request) -> str | web.Response:
        if not self._authorized(request):
            return _error(401, 0, "401: Unauthorized")
        channel_id = request.match_info["channel"]
        dm_ids = {channel for channel, _ in self._dm_channels.values()}
        if channel_id not in self.guild.channel_ids and channel_id not in dm_ids:
            return _error(404, 10003, "Unknown Channel")
        if channel_id in self.forbidden_channel_ids:
            return _error(403, 50001, "Missing Access")
        return channel_id

    async def _channel_create_message(self, request: web.Request) -> web.Response:
        channel_id = self._channel_access(request)
        if isinstance(channel_id, web.Response):
            return channel_id
        if any(
            channel_id == channel
            for user_id, (channel, _) in self._dm_channels.items()
            if user_id in self.closed_dm_user_ids
        ):
            return _error(403, 50007, "Cannot send messages to this user")
        body, files = request[RECORD].json or {}, request[RECORD].files
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            earlier = self._nonces.get((self.bot.id, str(nonce)))  # the author's nonces, whatever the channel
            if earlier is not None:
                return _json_response(self.messages[earlier].payload)
        flags = int(body.get("flags") or 0) & ~(FLAG_EPHEMERAL | FLAG_LOADING)
        message = self._new_message(channel_id, {**body, "flags": flags}, files, webhook=False)
        if nonce is not None:
            message.payload["nonce"] = nonce
            self._nonces[(self.bot.id, str(nonce))] = message.id
        return _json_response(message.payload)

    async def _channel_list_messages(self, request: web.Request) -> web.Response:
        channel_id = self._channel_access(request)
        if isinstance(channel_id, web.Response):
            return channel_id
        limit = min(100, int(request.query.get("limit", "50")))
        visible = sorted((m for m in self.channel_messages(channel_id) if not m.ephemeral), key=lambda m: int(m.id))
        if "after" in request.query:  # the `limit` oldest after that id, still answered newest first
            after = int(request.query["after"])
            return _json_response([m.payload for m in [m for m in visible if int(m.id) > after][:limit][::-1]])
        return _json_response([m.payload for m in visible[::-1][:limit]])

    def _channel_message(self, request: web.Request) -> StoredMessage | web.Response:
        channel_id = self._channel_access(request)
        if isinstance(channel_id, web.Response):
            return channel_id
        message = self.messages.get(request.match_info["message"])
        if message is None or message.deleted or message.payload["channel_id"] != channel_id or message.ephemeral:
            return _error(404, 10008, "Unknown Message")
        return message

    async def _channel_get_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        return message if isinstance(message, web.Response) else _json_response(message.payload)

    async def _channel_edit_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if isinstance(message, web.Response):
            return message
        if message.payload["author"]["id"] != self.bot.id:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        self._apply_edit(message, request[RECORD].json or {}, request[RECORD].files)
        return _json_response(message.payload)

    async def _channel_delete_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if isinstance(message, web.Response):
            return message
        message.deleted = True
        return web.Response(status=204)

    async def _create_dm(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, 0, "401: Unauthorized")
        recipient_id = str((request[RECORD].json or {}).get("recipient_id", ""))
        known = {user.id: user for _, user in self._dm_channels.values()}
        known.update({r.user.id: r.user for r in self.interactions.values()})
        user = known.get(recipient_id)
        if user is None:
            return _error(400, 50007, "Cannot send messages to this user")
        return _json_response(dm_channel_payload(self.dm_channel_id(user), user))

    # ------------------------------------------------------------------ messages

    def _new_message(
        self, channel_id: str, body: dict[str, Any], files: list[UploadedFile], *, webhook: bool
    ) -> StoredMessage:
        in_guild = channel_id in self.guild.channel_ids
        payload = message_payload(
            message_id=self.snowflake(),
            channel_id=channel_id,
            author=self.bot,
            guild_id=self.guild.id if in_guild else None,
            webhook_id=self.application_id if webhook else None,
            flags=int(body.get("flags") or 0),
        )
        if webhook:
            payload["application_id"] = self.application_id
        message = StoredMessage(payload)
        self._apply_edit(message, body, files, count_edit=False)
        self.messages[message.id] = message
        return message

    def _apply_edit(
        self, message: StoredMessage, body: dict[str, Any], files: list[UploadedFile], *, count_edit: bool = True
    ) -> None:
        payload = message.payload
        if "content" in body:
            payload["content"] = body["content"] or ""
        for key in ("components", "embeds"):
            if key in body:
                payload[key] = body[key] or []
        if "attachments" in body or files:
            kept_ids = {str(a.get("id")) for a in body.get("attachments") or []}
            if "attachments" in body:
                keep = [
                    (a, f) for a, f in zip(payload["attachments"], message.files, strict=True) if a["id"] in kept_ids
                ]
            else:
                keep = list(zip(payload["attachments"], message.files, strict=True))
            new = [(self._attachment(f), f) for f in files]
            payload["attachments"] = [a for a, _ in keep + new]
            message.files = [f for _, f in keep + new]
        if count_edit:
            payload["flags"] = payload["flags"] & ~FLAG_LOADING
            payload["edited_timestamp"] = now_iso()
            message.edits += 1

    def _attachment(self, upload: UploadedFile) -> dict[str, Any]:
        attachment_id = self.snowflake()
        url = f"http://127.0.0.1:{self.port}/attachments/{attachment_id}/{upload.filename}"
        return {
            "id": attachment_id,
            "filename": upload.filename,
            "size": len(upload.data),
            "url": url,
            "proxy_url": url,
            "content_type": upload.content_type,
        }


async def _read_body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    """JSON body, or multipart: payload_json plus files[n] parts with their bytes."""
    if request.content_type.startswith("multipart/"):
        payload: Any = None
        files: list[UploadedFile] = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            data = await part.read()  # type: ignore[union-attr]
            name = part.name or ""  # type: ignore[union-attr]
            if name == "payload_json":
                payload = json.loads(data)
            else:
                content_type = part.headers.get("Content-Type", "application/octet-stream")  # type: ignore[union-attr]
                files.append(UploadedFile(name, part.filename or name, content_type, bytes(data)))  # type: ignore[union-attr]
        return payload, files
    if request.content_type == "application/x-www-form-urlencoded":  # OAuth2's token endpoint
        return dict(await request.post()), []
    if request.body_exists:
        raw = await request.read()
        if raw:
            return json.loads(raw), []
    return None, []
