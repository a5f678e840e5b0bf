"""Slack's side of the HTTP transport: signed requests to an app's endpoint, built the way Slack builds them.

Signatures follow Slack's v0 scheme: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{timestamp}:{body}">` keyed
with the signing secret, and `X-Slack-Request-Timestamp`. Slash commands are form-encoded, events are JSON,
interactive payloads are a form with one `payload=<JSON>` field.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.standins.slack_server import BOT_USER_ID, TEAM_ID, SlackStandIn

JsonDict = dict[str, Any]
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

_counter = itertools.count(1)


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter):06d}"


@dataclass
class SignedRequest:
    """A request ready to post: replaying the same object posts the same bytes and headers."""

    body: bytes
    content_type: str
    headers: dict[str, str]


@dataclass
class AppResponse:
    status: int
    text: str

    def json(self) -> JsonDict:
        return json.loads(self.text) if self.text else {}


class SlackSender:
    """Posts signed requests to an app's HTTP endpoint (`http://127.0.0.1:<port>/slack/events`). Messages that
    users write (mentions, DMs) are also recorded in the stand-in, as Slack knows them."""

    def __init__(self, endpoint: str, signing_secret: str, standin: SlackStandIn | None = None) -> None:
        self.endpoint = endpoint
        self.signing_secret = signing_secret
        self.standin = standin
        self.response_url_base = standin.base_url if standin else "http://127.0.0.1:9"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SlackSender:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    # ----------------------------------------------------------------- signing and posting

    def signed(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> SignedRequest:
        timestamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": sign(secret or self.signing_secret, timestamp, body),
        }
        headers.update(extra_headers or {})
        return SignedRequest(body=body, content_type=content_type, headers=headers)

    async def post(self, request: SignedRequest, *, body: bytes | None = None) -> AppResponse:
        """Post `request`; `body` replaces the signed body (a tampered request)."""
        assert self._session is not None, "use `async with SlackSender(...)`"
        data = request.body if body is None else body
        # aiohttp warns about large raw bodies (tests turn warnings into errors): stream those from a file object.
        sent: bytes | io.BytesIO = io.BytesIO(data) if len(data) > 512 * 1024 else data
        async with self._session.post(self.endpoint, data=sent, headers=request.headers) as response:
            return AppResponse(status=response.status, text=await response.text())

    # ----------------------------------------------------------------- payload builders

    def slash_command(
        self,
        text: str,
        *,
        user_id: str = "UALICE",
        channel_id: str = "CGENERAL",
        channel_name: str = "general",
        command: str = "/imagine",
        trigger_id: str | None = None,
        **signing: Any,
    ) -> SignedRequest:
        form = slash_command_payload(
            text,
            user_id=user_id,
            channel_id=channel_id,
            channel_name=channel_name,
            command=command,
            trigger_id=trigger_id,
            response_url=f"{self.response_url_base}/response/{unique('cmd')}",
        )
        return self.signed(urlencode(form).encode(), FORM, **signing)

    def event(self, event: JsonDict, *, event_id: str | None = None, **signing: Any) -> SignedRequest:
        envelope = event_envelope(event, event_id=event_id)
        return self.signed(json.dumps(envelope).encode(), JSON, **signing)

    def app_mention(
        self,
        text: str,
        *,
        user_id: str = "UALICE",
        channel_id: str = "CGENERAL",
        thread_ts: str | None = None,
        event_id: str | None = None,
        files: list[JsonDict] | None = None,
        **signing: Any,
    ) -> SignedRequest:
        event = app_mention_event(text, user_id=user_id, channel_id=channel_id, thread_ts=thread_ts)
        if files:
            event["files"] = files
        self._remember(event)
        return self.event(event, event_id=event_id, **signing)

    def direct_message(
        self,
        text: str,
        *,
        user_id: str = "UALICE",
        channel_id: str = "DALICE",
        event_id: str | None = None,
        files: list[JsonDict] | None = None,
        **signing: Any,
    ) -> SignedRequest:
        event = direct_message_event(text, user_id=user_id, channel_id=channel_id)
        if files:  # as Slack sends a DM with a file shared in it
            event |= {"subtype": "file_share", "files": files}
        self._remember(event)
        return self.event(event, event_id=event_id, **signing)

    def _remember(self, event: JsonDict) -> None:
        if self.standin is not None:
            self.standin.user_message(
                event["channel"], event["ts"], event["user"], event["text"], event.get("thread_ts")
            )

    def url_verification(self, challenge: str, **signing: Any) -> SignedRequest:
        body = {"token": "deprecated", "challenge": challenge, "type": "url_verification"}
        return self.signed(json.dumps(body).encode(), JSON, **signing)

    def button_click(
        self,
        action_id: str,
        *,
        user_id: str = "UALICE",
        channel_id: str = "CGENERAL",
        message_ts: str = "1700000000.000001",
        thread_ts: str | None = None,
        value: str = "",
        trigger_id: str | None = None,
        **signing: Any,
    ) -> SignedRequest:
        payload = block_actions_payload(
            action_id,
            user_id=user_id,
            channel_id=channel_id,
            message_ts=message_ts,
            thread_ts=thread_ts,
            value=value,
            trigger_id=trigger_id,
            response_url=f"{self.response_url_base}/response/{unique('act')}",
        )
        return self.signed(urlencode({"payload": json.dumps(payload)}).encode(), FORM, **signing)


def slash_command_payload(
    text: str,
    *,
    user_id: str = "UALICE",
    channel_id: str = "CGENERAL",
    channel_name: str = "general",
    command: str = "/imagine",
    trigger_id: str | None = None,
    response_url: str = "",
) -> dict[str, str]:
    """The fields of a slash command (a form over HTTP, a JSON payload over Socket Mode)."""
    return {
        "token": "deprecated-verification-token",
        "team_id": TEAM_ID,
        "team_domain": "standin",
        "channel_id": channel_id,
        "channel_name": "directmessage" if channel_id.startswith("D") else channel_name,
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": "ASTANDIN",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or unique("trigger."),
    }


def event_envelope(event: JsonDict, *, event_id: str | None = None) -> JsonDict:
    return {
        "token": "deprecated-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": "ASTANDIN",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or unique("Ev"),
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
    }


def app_mention_event(
    text: str, *, user_id: str, channel_id: str, ts: str | None = None, thread_ts: str | None = None
) -> JsonDict:
    ts = ts or f"{int(time.time())}.{next(_counter):06d}"
    event = {
        "type": "app_mention",
        "user": user_id,
        "text": f"<@{BOT_USER_ID}> {text}",
        "ts": ts,
        "channel": channel_id,
        "event_ts": ts,
        "team": TEAM_ID,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def shared_file(url: str, name: str, size: int, mimetype: str = "image/png") -> JsonDict:
    """A file object as a `files` entry of a message or app_mention event (the fields the bot reads, and a few)."""
    file_id = url.rsplit("/download/", 1)[0].rsplit("-", 1)[-1]
    return {
        "id": file_id,
        "name": name,
        "title": name,
        "mimetype": mimetype,
        "filetype": name.rsplit(".", 1)[-1],
        "size": size,
        "mode": "hosted",
        "url_private": url.replace("/download/", "/"),
        "url_private_download": url,
    }


def direct_message_event(text: str, *, user_id: str, channel_id: str, ts: str | None = None) -> JsonDict:
    ts = ts or f"{int(time.time())}.{next(_counter):06d}"
    return {
        "type": "message",
        "channel_type": "im",
        "user": user_id,
        "text": text,
        "ts": ts,
        "channel": channel_id,
        "event_ts": ts,
        "team": TEAM_ID,
    }


def block_actions_payload(
    action_id: str,
    *,
    user_id: str,
    channel_id: str,
    message_ts: str,
    thread_ts: str | None = None,
    value: str = "",
    trigger_id: str | None = None,
    response_url: str = "",
) -> JsonDict:
    message: JsonDict = {"type": "message", "ts": message_ts, "user": BOT_USER_ID, "text": ""}
    if thread_ts:
        message["thread_ts"] = thread_ts
    action_ts = f"{int(time.time())}.{next(_counter):06d}"
    return {
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": "standin"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": "ASTANDIN",
        "token": "deprecated-verification-token",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
            **({"thread_ts": thread_ts} if thread_ts else {}),
        },
        "trigger_id": trigger_id or unique("trigger."),
        "channel": {"id": channel_id, "name": "general"},
        "message": message,
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "imagine",
                "type": "button",
                "value": value,
                "text": {"type": "plain_text", "text": "button"},
                "action_ts": action_ts,
            }
        ],
    }
