"""A stand-in for Slack's Web API and Socket Mode, on 127.0.0.1, for tests of the real slack_sdk/slack-bolt.

It speaks the wire protocol slack_sdk uses: `POST /api/<method>` (a few methods are `GET`) with arguments in
the query string (`files.*`), as JSON (`chat.*`) or as a form (the rest); bearer tokens in `Authorization`;
`{"ok": ..., ...}` answers as JSON. `files.getUploadURLExternal` hands out upload URLs on this server (the upload
is answered `text/plain`, as files.slack.com does) and `files.completeUploadExternal` shares the uploaded bytes.
`apps.connections.open` returns a `ws://127.0.0.1` URL for Socket Mode: hello, envelopes, acks.

Messages keep their message metadata (`metadata` on chat.postMessage), returned by conversations.history and
conversations.replies with `include_all_metadata`, as Slack does; a completed upload is shared in a message of its
own (its `files`, its initial comment as text) that both return too.

Every request is recorded (`calls`) and tests wait on conditions (`wait_for`) instead of sleeping. Failures are
injected per method (`fail`): HTTP 429 with `Retry-After`, 500s, or Slack-level `ok: false` errors; with
`commit=True` the call takes effect first and only its answer is the failure (a lost response).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from tests.standins import PLATFORM_LISTEN_BACKLOG, slack_oidc

JsonDict = dict[str, Any]
DEFAULT_BOT_TOKEN = "xoxb-standin-bot-token"
DEFAULT_APP_TOKEN = "xapp-standin-app-token"
BOT_USER_ID = "UIMAGINEBOT"
BOT_ID = "BIMAGINE"
TEAM_ID = "TSTANDIN"


@dataclass
class SlackCall:
    """One request the stand-in received."""

    http_method: str
    path: str
    api: str
    """The Web API method (`chat.postMessage`), or `upload` / `response_url` for those endpoints."""
    query: dict[str, str]
    headers: dict[str, str]
    content_type: str
    body: bytes
    args: JsonDict
    """Query, form and JSON arguments merged (JSON values keep their types)."""
    status: int = 200
    response: JsonDict | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response is None or self.response.get("ok", True))


@dataclass
class PostedMessage:
    channel: str
    ts: str
    text: str
    blocks: list[JsonDict]
    thread_ts: str | None
    user: str = BOT_USER_ID
    edits: int = 0
    metadata: JsonDict | None = None
    files: list[JsonDict] = field(default_factory=list)
    """A file share's files (`id`, `name`, `title`)."""


@dataclass
class EphemeralMessage:
    channel: str
    user: str
    text: str
    blocks: list[JsonDict]
    thread_ts: str | None


@dataclass
class UploadedFile:
    file_id: str
    filename: str
    length: int
    data: bytes | None = None


@dataclass
class CompletedUpload:
    """One successful `files.completeUploadExternal`: every file it shared, with its bytes."""

    channel_id: str | None
    thread_ts: str | None
    initial_comment: str | None
    files: list[UploadedFile]
    titles: list[str]


@dataclass
class InjectedFailure:
    status: int = 500
    retry_after: int | None = None
    error: str | None = None
    times: int = 1
    commit: bool = False
    matching: Callable[[JsonDict], bool] | None = None


@dataclass
class SocketConnection:
    ws: web.WebSocketResponse
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class SlackStandIn:
    """Start with `await SlackStandIn().start()`; point `AsyncWebClient(base_url=standin.api_url)` at it."""

    def __init__(
        self,
        bot_token: str = DEFAULT_BOT_TOKEN,
        app_token: str = DEFAULT_APP_TOKEN,
        usergroups: dict[str, list[str]] | None = None,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.usergroups: dict[str, list[str]] = dict(usergroups or {})
        self.admins: set[str] = set()
        """Users `users.info` calls workspace admins (`is_admin`)."""
        self.owners: set[str] = set()
        self.calls: list[SlackCall] = []
        self.deleted: list[PostedMessage] = []
        """Messages removed by `chat.delete` (gone from `messages`, as on Slack)."""
        self.deleted_files: set[str] = set()
        self.messages: dict[tuple[str, str], PostedMessage] = {}
        self.channels_without_bot: set[str] = set()
        """Channels the bot is not a member of: posting there fails as on Slack (not_in_channel)."""
        self.archived_channels: set[str] = set()
        """Archived channels: posting there fails as on Slack (is_archived); they can still be read."""
        self.deleted_channels: set[str] = set()
        """Deleted channels: every call naming one fails as on Slack (channel_not_found)."""
        self.file_messages: dict[tuple[str, str], PostedMessage] = {}
        """The messages that completed uploads shared their files in (apart from `messages`: not text posts)."""
        self.ephemerals: list[EphemeralMessage] = []
        self.responses: list[JsonDict] = []
        """Bodies posted to response URLs (slash command / interaction follow-ups)."""
        self.uploads: dict[str, UploadedFile] = {}
        self.completed: list[CompletedUpload] = []
        self.socket_acks: dict[str, JsonDict] = {}
        self._failures: dict[str, list[InjectedFailure]] = {}
        self._changed = asyncio.Condition()
        self._last_ts = 0.0
        self._id_counter = itertools.count(1)
        self._sockets: list[SocketConnection] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.oidc = slack_oidc.SlackOIDC(TEAM_ID)
        """Sign in with Slack (OpenID Connect), on this same origin."""

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> SlackStandIn:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/api/{method}", self._handle_api),
                web.get("/api/{method}", self._handle_api),
                web.post("/upload/{file_id}", self._handle_upload),
                web.post("/response/{response_id}", self._handle_response_url),
                web.get("/socket", self._handle_socket),
            ]
        )
        self.oidc.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=PLATFORM_LISTEN_BACKLOG)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for connection in list(self._sockets):
            await connection.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackStandIn:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What `slack.api_base` / `AsyncWebClient(base_url=...)` should be (trailing slash included)."""
        return f"{self.base_url}/api/"

    def response_url(self, name: str | None = None) -> str:
        return f"{self.base_url}/response/{name or next(self._id_counter)}"

    # ----------------------------------------------------------------- test controls

    def fail(
        self,
        api: str,
        status: int = 500,
        *,
        retry_after: int | None = None,
        error: str | None = None,
        times: int = 1,
        commit: bool = False,
        matching: Callable[[JsonDict], bool] | None = None,
    ) -> None:
        """Make the next `times` calls of `api` fail: HTTP `status` (429 gets `Retry-After: retry_after`), or,
        with `error` and status 200, a Slack-level `{"ok": false, "error": error}`. With `commit`, each call takes
        effect first (the message is posted, the upload shared) and only its answer is the failure. With
        `matching`, only calls whose arguments it accepts count (the others pass)."""
        self._failures.setdefault(api, []).append(
            InjectedFailure(
                status=status, retry_after=retry_after, error=error, times=times, commit=commit, matching=matching
            )
        )

    def clear_failures(self) -> None:
        self._failures.clear()

    async def wait_for(self, predicate: Callable[[], Any], within: float = 30.0) -> Any:
        """Wait until `predicate()` is truthy (re-checked after every request and socket message)."""
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(predicate), within)

    def user_message(self, channel: str, ts: str, user: str, text: str, thread_ts: str | None = None) -> None:
        """A message a person wrote (Slack knows it; the app hears of it through an event)."""
        self.messages[(channel, ts)] = PostedMessage(channel, ts, text, [], thread_ts, user=user)

    def calls_to(self, api: str, *, ok_only: bool = False) -> list[SlackCall]:
        return [c for c in self.calls if c.api == api and (c.ok or not ok_only)]

    def thread(self, channel: str, thread_ts: str) -> list[PostedMessage]:
        return [m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts]

    def messages_in(self, channel: str) -> list[PostedMessage]:
        """Every message in `channel`, text posts and file shares, oldest first."""
        found = [m for m in (*self.messages.values(), *self.file_messages.values()) if m.channel == channel]
        return sorted(found, key=lambda m: float(m.ts))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _next_ts(self) -> str:
        """Epoch seconds with microseconds, as Slack's are (`oldest`/`latest` compare them), always increasing."""
        self._last_ts = max(time.time(), self._last_ts + 1e-6)
        return f"{self._last_ts:.6f}"

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_counter):08d}"

    # ----------------------------------------------------------------- socket mode

    async def send_envelope(
        self,
        envelope_type: str,
        payload: JsonDict,
        *,
        accepts_response_payload: bool = False,
        retry_attempt: int = 0,
        envelope_id: str | None = None,
    ) -> str:
        """Push a Socket Mode envelope (`slash_commands`, `events_api`, `interactive`) to the connected app."""
        if not self._sockets:
            raise RuntimeError("no Socket Mode connection: start the app first and wait for `socket_connected`")
        envelope_id = envelope_id or self._next_id("env-")
        envelope = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        await self._sockets[-1].ws.send_str(json.dumps(envelope))
        return envelope_id

    def socket_connected(self) -> bool:
        return any(not c.ws.closed for c in self._sockets)

    async def wait_for_ack(self, envelope_id: str, within: float = 30.0) -> JsonDict:
        await self.wait_for(lambda: envelope_id in self.socket_acks, within)
        return self.socket_acks[envelope_id]

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._issued_tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = SocketConnection(ws=ws)
        self._sockets.append(connection)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "standin", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": "ASTANDIN"},
                }
            )
        )
        await self._notify()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._record_ack(message.data)
        finally:
            self._sockets.remove(connection)
            connection.closed.set()
            await self._notify()
        return ws

    async def _record_ack(self, text: str) -> None:
        try:
            ack = json.loads(text)
        except ValueError:
            return
        if isinstance(ack, dict) and "envelope_id" in ack:
            self.socket_acks[str(ack["envelope_id"])] = ack.get("payload") or {}
            await self._notify()

    # ----------------------------------------------------------------- HTTP plumbing

    @property
    def _issued_tickets(self) -> set[str]:
        return {
            c.response["url"].rsplit("=", 1)[1]
            for c in self.calls_to("apps.connections.open", ok_only=True)
            if c.response and "url" in c.response
        }

    async def _parse(self, request: web.Request, api: str) -> SlackCall:
        body = await request.read()
        content_type = request.content_type
        args: JsonDict = dict(request.query)
        if content_type == "application/x-www-form-urlencoded":
            args.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        elif content_type == "application/json" and body:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                args.update(parsed)
        return SlackCall(
            http_method=request.method,
            path=request.path,
            api=api,
            query=dict(request.query),
            headers=dict(request.headers),
            content_type=content_type,
            body=body,
            args=args,
        )

    def _injected(self, api: str, args: JsonDict) -> InjectedFailure | None:
        queue = self._failures.get(api) or []
        failure = next((f for f in queue if f.matching is None or f.matching(args)), None)
        if failure is None:
            return None
        failure.times -= 1
        if failure.times <= 0:
            queue.remove(failure)
        return failure

    async def _finish(self, call: SlackCall, status: int, payload: JsonDict, headers: dict[str, str]) -> web.Response:
        call.status, call.response = status, payload
        self.calls.append(call)
        await self._notify()
        # Exactly `application/json` with a charset, as slack.com answers; slack_sdk parses either.
        return web.Response(
            status=status, body=json.dumps(payload).encode(), headers=headers, content_type="application/json"
        )

    async def _handle_api(self, request: web.Request) -> web.Response:
        api = request.match_info["method"]
        call = await self._parse(request, api)
        failure = self._injected(api, call.args)
        committed = failure if failure is not None and failure.commit else None
        if failure is not None and committed is None:
            return await self._injected_response(call, failure)
        if api in slack_oidc.METHODS:  # a user's sign-in: client credentials or the user's own token, not the bot's
            payload = self.oidc.api(api, call.args, call.headers.get("Authorization", ""))
            return await self._finish(call, 200, payload, {})
        token = _bearer(call)
        expected = self.app_token if api == "apps.connections.open" else self.bot_token
        if not token:
            return await self._finish(call, 200, {"ok": False, "error": "not_authed"}, {})
        if token != expected:
            return await self._finish(call, 200, {"ok": False, "error": "invalid_auth"}, {})
        handler = self._methods.get(api)
        if handler is None:
            return await self._finish(call, 200, {"ok": False, "error": "unknown_method"}, {})
        try:
            payload = handler(self, call.args)
        except SlackError as exc:
            payload = {"ok": False, "error": exc.error}
        if committed is not None:  # done, and the answer lost: what the client sees is the failure
            return await self._injected_response(call, committed)
        return await self._finish(call, 200, payload, {})

    async def _injected_response(self, call: SlackCall, failure: InjectedFailure) -> web.Response:
        if failure.error is not None:
            return await self._finish(call, failure.status, {"ok": False, "error": failure.error}, {})
        headers = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
        error = "ratelimited" if failure.status == 429 else "internal_error"
        return await self._finish(call, failure.status, {"ok": False, "error": error}, headers)

    async def _handle_upload(self, request: web.Request) -> web.Response:
        call = await self._parse(request, "upload")
        failure = self._injected("upload", call.args)
        file_id = request.match_info["file_id"]
        upload = self.uploads.get(file_id)
        if failure is not None:
            status, text = failure.status, "error"
        elif upload is None:
            status, text = 404, "unknown upload"
        elif len(call.body) != upload.length:
            status, text = 400, f"length mismatch: announced {upload.length}, got {len(call.body)}"
        else:
            upload.data = call.body
            status, text = 200, f"OK - {len(call.body)}"
        call.status = status
        self.calls.append(call)
        await self._notify()
        return web.Response(status=status, text=text, content_type="text/plain")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        call = await self._parse(request, "response_url")
        call.response = {"ok": True}
        self.calls.append(call)
        if isinstance(call.args, dict):
            self.responses.append(dict(call.args))
        await self._notify()
        return web.Response(status=200, text="ok", content_type="text/plain")

    # ----------------------------------------------------------------- Web API methods

    def _auth_test(self, args: JsonDict) -> JsonDict:
        return {
            "ok": True,
            "url": "https://standin.slack.invalid/",
            "team": "Stand-in",
            "user": "imagine",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _require_membership(self, channel: str | None) -> None:
        if channel in self.deleted_channels:
            raise SlackError("channel_not_found")
        if channel in self.channels_without_bot:
            raise SlackError("not_in_channel")

    def _require_postable(self, channel: str | None) -> None:
        self._require_membership(channel)
        if channel in self.archived_channels:
            raise SlackError("is_archived")

    def _chat_post_message(self, args: JsonDict) -> JsonDict:
        channel = _required(args, "channel")
        self._require_postable(channel)
        text, blocks = _text_and_blocks(args)
        thread_ts = args.get("thread_ts") or None
        if thread_ts is not None and (channel, str(thread_ts)) not in self.messages:
            raise SlackError("thread_not_found")
        message = PostedMessage(
            channel, self._next_ts(), text, blocks, str(thread_ts) if thread_ts else None, metadata=_metadata(args)
        )
        self.messages[(channel, message.ts)] = message
        return {"ok": True, "channel": channel, "ts": message.ts, "message": _message_json(message, metadata=True)}

    def _chat_update(self, args: JsonDict) -> JsonDict:
        channel, ts = _required(args, "channel"), _required(args, "ts")
        message = self.messages.get((channel, ts))
        if message is None:
            raise SlackError("message_not_found")
        message.text, message.blocks = _text_and_blocks(args)
        message.edits += 1
        return {"ok": True, "channel": channel, "ts": ts, "text": message.text, "message": _message_json(message)}

    def _chat_post_ephemeral(self, args: JsonDict) -> JsonDict:
        channel, user = _required(args, "channel"), _required(args, "user")
        self._require_postable(channel)
        text, blocks = _text_and_blocks(args)
        self.ephemerals.append(EphemeralMessage(channel, user, text, blocks, args.get("thread_ts") or None))
        return {"ok": True, "message_ts": self._next_ts()}

    def _chat_delete(self, args: JsonDict) -> JsonDict:
        """A bot may delete its own messages only (a user's needs a user token)."""
        channel, ts = _required(args, "channel"), _required(args, "ts")
        message = self.messages.get((channel, ts))
        if message is None:
            raise SlackError("message_not_found")
        if message.user != BOT_USER_ID:
            raise SlackError("cant_delete_message")
        self.deleted.append(self.messages.pop((channel, ts)))
        return {"ok": True, "channel": channel, "ts": ts}

    def _files_delete(self, args: JsonDict) -> JsonDict:
        file_id = _required(args, "file")
        if file_id not in self.uploads:
            raise SlackError("file_not_found")
        if file_id in self.deleted_files:
            raise SlackError("file_deleted")
        self.deleted_files.add(file_id)
        return {"ok": True}

    def visible_uploads(self) -> list[CompletedUpload]:
        """Completed uploads with at least one file not deleted: what a channel still shows."""
        return [u for u in self.completed if any(f.file_id not in self.deleted_files for f in u.files)]

    def _users_info(self, args: JsonDict) -> JsonDict:
        user = _required(args, "user")
        return {
            "ok": True,
            "user": {
                "id": user,
                "team_id": TEAM_ID,
                "name": user.lower(),
                "is_admin": user in self.admins or user in self.owners,
                "is_owner": user in self.owners,
                "is_primary_owner": False,
                "is_bot": False,
            },
        }

    def _conversations_history(self, args: JsonDict) -> JsonDict:
        """A channel's top-level messages (file shares too) within `oldest`/`latest`, newest first, at most
        `limit` (one page: no cursor); their metadata only with `include_all_metadata`."""
        channel = _required(args, "channel")
        self._require_membership(channel)
        limit = int(args.get("limit") or 100)
        top_level = [m for m in self.messages_in(channel) if m.thread_ts is None or m.thread_ts == m.ts]
        newest_first = _within(top_level, args)[::-1]
        return {
            "ok": True,
            "messages": [_message_json(m, metadata=_flag(args, "include_all_metadata")) for m in newest_first[:limit]],
            "has_more": len(newest_first) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_replies(self, args: JsonDict) -> JsonDict:
        """A thread: its parent, then its replies (file shares too), oldest first, within `oldest`/`latest`, at
        most `limit` (one page: no cursor); their metadata only with `include_all_metadata`."""
        channel, ts = _required(args, "channel"), _required(args, "ts")
        self._require_membership(channel)
        if (channel, ts) not in self.messages:
            raise SlackError("thread_not_found")
        limit = int(args.get("limit") or 1000)
        in_thread = [m for m in self.messages_in(channel) if m.ts == ts or m.thread_ts == ts]
        oldest_first = _within(in_thread, args)
        return {
            "ok": True,
            "messages": [_message_json(m, metadata=_flag(args, "include_all_metadata")) for m in oldest_first[:limit]],
            "has_more": len(oldest_first) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_open(self, args: JsonDict) -> JsonDict:
        users = _required(args, "users")
        return {"ok": True, "channel": {"id": "D" + users.split(",")[0].lstrip("U")}}

    def _files_get_upload_url(self, args: JsonDict) -> JsonDict:
        filename = _required(args, "filename")
        length = int(_required(args, "length"))
        file_id = self._next_id("F")
        self.uploads[file_id] = UploadedFile(file_id=file_id, filename=filename, length=length)
        return {"ok": True, "upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload(self, args: JsonDict) -> JsonDict:
        files = json.loads(_required(args, "files"))
        channel = args.get("channel_id") or None
        self._require_postable(channel)
        thread_ts = args.get("thread_ts") or None
        if thread_ts and channel and (channel, thread_ts) not in self.messages:
            raise SlackError("thread_not_found")
        shared: list[UploadedFile] = []
        for entry in files:
            upload = self.uploads.get(entry.get("id", ""))
            if upload is None or upload.data is None:
                raise SlackError("file_not_found")
            shared.append(upload)
        self.completed.append(
            CompletedUpload(
                channel_id=channel,
                thread_ts=thread_ts,
                initial_comment=args.get("initial_comment") or None,
                files=shared,
                titles=[str(entry.get("title") or "") for entry in files],
            )
        )
        if channel:  # shared in a message of its own (Slack posts it a moment later; here at once)
            share = PostedMessage(
                channel,
                self._next_ts(),
                str(args.get("initial_comment") or ""),
                [],
                thread_ts,
                files=[
                    {"id": f.file_id, "name": f.filename, "title": t}
                    for f, t in zip(shared, self.completed[-1].titles, strict=True)
                ],
            )
            self.file_messages[(channel, share.ts)] = share
        return {
            "ok": True,
            "files": [
                {"id": f.file_id, "name": f.filename, "title": t, "size": f.length}
                for f, t in zip(shared, self.completed[-1].titles, strict=True)
            ],
        }

    def _usergroups_users_list(self, args: JsonDict) -> JsonDict:
        group = _required(args, "usergroup")
        if group not in self.usergroups:
            raise SlackError("no_such_subteam")
        return {"ok": True, "users": list(self.usergroups[group])}

    def _apps_connections_open(self, args: JsonDict) -> JsonDict:
        ticket = self._next_id("ticket-")
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}"}

    _methods: dict[str, Callable[[SlackStandIn, JsonDict], JsonDict]] = {
        "auth.test": _auth_test,
        "chat.postMessage": _chat_post_message,
        "chat.update": _chat_update,
        "chat.postEphemeral": _chat_post_ephemeral,
        "chat.delete": _chat_delete,
        "files.delete": _files_delete,
        "users.info": _users_info,
        "conversations.open": _conversations_open,
        "conversations.history": _conversations_history,
        "conversations.replies": _conversations_replies,
        "files.getUploadURLExternal": _files_get_upload_url,
        "files.completeUploadExternal": _files_complete_upload,
        "usergroups.users.list": _usergroups_users_list,
        "apps.connections.open": _apps_connections_open,
    }


class SlackError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _bearer(call: SlackCall) -> str:
    header = call.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :]
    return str(call.args.get("token", ""))


def _required(args: JsonDict, name: str) -> str:
    value = args.get(name)
    if value in (None, ""):
        raise SlackError(f"invalid_arguments: missing {name}")
    return str(value)


def _text_and_blocks(args: JsonDict) -> tuple[str, list[JsonDict]]:
    blocks = args.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    text = str(args.get("text") or "")
    if not text and not blocks:
        raise SlackError("no_text")
    return text, list(blocks)


def _message_json(message: PostedMessage, *, metadata: bool = False) -> JsonDict:
    data: JsonDict = {
        "type": "message",
        "user": message.user,
        "bot_id": BOT_ID,
        "ts": message.ts,
        "text": message.text,
        "blocks": message.blocks,
    }
    if message.thread_ts:
        data["thread_ts"] = message.thread_ts
    if message.files:
        data["files"], data["upload"] = [dict(f) for f in message.files], True
    if metadata and message.metadata is not None:
        data["metadata"] = dict(message.metadata)
    return data


def _metadata(args: JsonDict) -> JsonDict | None:
    """chat.postMessage's `metadata` (an object in JSON, a JSON string in a form), as Slack checks it."""
    value = args.get("metadata")
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict) or not isinstance(value.get("event_type"), str):
        raise SlackError("invalid_metadata_format")
    if not isinstance(value.get("event_payload"), dict):
        raise SlackError("invalid_metadata_format")
    return {"event_type": value["event_type"], "event_payload": dict(value["event_payload"])}


def _flag(args: JsonDict, name: str) -> bool:
    """A boolean argument: `true`/`1` in a query or form, a bool in JSON."""
    value = args.get(name)
    return value is True or str(value).lower() in ("1", "true")


def _within(messages: list[PostedMessage], args: JsonDict) -> list[PostedMessage]:
    """Those with `oldest` < ts < `latest` (both ends included with `inclusive`), oldest first."""
    inclusive = _flag(args, "inclusive")
    oldest = float(args["oldest"]) if args.get("oldest") not in (None, "") else None
    latest = float(args["latest"]) if args.get("latest") not in (None, "") else None

    def inside(ts: float) -> bool:
        after = oldest is None or ts > oldest or (inclusive and ts == oldest)
        before = latest is None or ts < latest or (inclusive and ts == latest)
        return after and before

    return sorted((m for m in messages if inside(float(m.ts))), key=lambda m: float(m.ts))
