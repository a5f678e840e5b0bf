"""The Slack stand-in answers the real slack_sdk the way Slack does (so adapter tests mean something)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.standins.slack_server import DEFAULT_APP_TOKEN, DEFAULT_BOT_TOKEN, SlackStandIn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(usergroups={"SMODS": ["UMOD1", "UMOD2"]}) as server:
        yield server


@pytest.fixture
async def client(standin: SlackStandIn) -> AsyncIterator[AsyncWebClient]:
    web = AsyncWebClient(
        token=DEFAULT_BOT_TOKEN,
        base_url=standin.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
    )
    yield web
    if web.session is not None:
        await web.session.close()


async def test_chat_methods_are_json_and_messages_can_be_edited(standin: SlackStandIn, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(
        channel="C1", text="queued", blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "queued"}}]
    )
    await client.chat_update(channel="C1", ts=posted["ts"], text="running 50%")
    await client.chat_postEphemeral(channel="C1", user="UALICE", text="only you")

    post_call = standin.calls_to("chat.postMessage")[0]
    assert post_call.content_type == "application/json"
    assert post_call.args["blocks"][0]["type"] == "section"
    assert standin.messages[("C1", posted["ts"])].text == "running 50%"
    assert standin.messages[("C1", posted["ts"])].edits == 1
    assert standin.ephemerals[0].user == "UALICE"


async def test_unknown_message_and_bad_token_are_slack_errors(standin: SlackStandIn, client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as missing:
        await client.chat_update(channel="C1", ts="1.2", text="x")
    assert missing.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as bad:
        await client.auth_test(token="xoxb-wrong")
    assert bad.value.response["error"] == "invalid_auth"


async def test_files_upload_v2_is_one_complete_call_with_every_file(
    standin: SlackStandIn, client: AsyncWebClient
) -> None:
    parent = await client.chat_postMessage(channel="C1", text="status")
    uploads = [{"file": bytes([i]) * (100 + i), "filename": f"{i}.jpg", "title": f"image {i}"} for i in range(4)]
    await client.files_upload_v2(
        file_uploads=uploads, channel="C1", thread_ts=parent["ts"], initial_comment="four images"
    )

    assert len(standin.calls_to("files.getUploadURLExternal")) == 4
    assert standin.calls_to("files.getUploadURLExternal")[0].query["filename"] == "0.jpg"
    assert len(standin.calls_to("upload")) == 4
    (completed,) = standin.completed
    assert completed.thread_ts == parent["ts"] and completed.channel_id == "C1"
    assert [f.data for f in completed.files] == [u["file"] for u in uploads]
    assert completed.titles == ["image 0", "image 1", "image 2", "image 3"]


async def test_rate_limit_is_retried_after_retry_after(standin: SlackStandIn, client: AsyncWebClient) -> None:
    standin.fail("chat.postMessage", 429, retry_after=0)
    await client.chat_postMessage(channel="C1", text="hello")
    statuses = [c.status for c in standin.calls_to("chat.postMessage")]
    assert statuses == [429, 200]
    assert len(standin.messages) == 1


async def test_server_error_and_usergroups(standin: SlackStandIn, client: AsyncWebClient) -> None:
    standin.fail("usergroups.users.list", 500)
    with pytest.raises(SlackApiError):
        await client.usergroups_users_list(usergroup="SMODS")
    listed = await client.usergroups_users_list(usergroup="SMODS")
    assert listed["users"] == ["UMOD1", "UMOD2"]
    assert standin.calls_to("usergroups.users.list")[-1].query == {"usergroup": "SMODS"}


async def test_socket_mode_hello_envelope_and_ack(standin: SlackStandIn) -> None:
    web = AsyncWebClient(base_url=standin.api_url)
    received: asyncio.Queue[SocketModeRequest] = asyncio.Queue()

    async def listener(socket_client: SocketModeClient, request: SocketModeRequest) -> None:
        await received.put(request)
        await socket_client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id, payload={"text": "ack"})
        )

    socket_client = SocketModeClient(app_token=DEFAULT_APP_TOKEN, web_client=web)
    socket_client.socket_mode_request_listeners.append(listener)
    try:
        await socket_client.connect()
        await standin.wait_for(standin.socket_connected)
        envelope_id = await standin.send_envelope(
            "slash_commands", {"command": "/imagine", "text": "a fox"}, accepts_response_payload=True
        )
        request = await asyncio.wait_for(received.get(), 10)
        assert request.payload["text"] == "a fox"
        assert await standin.wait_for_ack(envelope_id) == {"text": "ack"}
    finally:
        await socket_client.close()
        if web.session is not None:
            await web.session.close()
    connect = standin.calls_to("apps.connections.open")[0]
    assert connect.headers["Authorization"] == f"Bearer {DEFAULT_APP_TOKEN}"
    assert json.loads(json.dumps(connect.response))["url"].startswith("ws://127.0.0.1:")
