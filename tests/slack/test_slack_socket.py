"""Socket Mode end to end: the adapter opens `apps.connections.open` with the app token, takes envelopes over
the stand-in's websocket, acknowledges each, and answers through the Web API as over HTTP."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bots import messages
from engine.requests import JobState
from tests.slack_harness import jpeg_sizes, slack_settings, start_rig
from tests.standins.slack_requests import (
    app_mention_event,
    block_actions_payload,
    event_envelope,
    slash_command_payload,
)
from tests.standins.slack_server import SlackStandIn

pytestmark = pytest.mark.timeout(300)


async def test_socket_mode_command_mention_button_and_retry(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with SlackStandIn() as standin:
        rig = await start_rig(slack_settings(tmp_path, tiny_model_dir, standin, mode="socket"), standin)
        try:
            await standin.wait_for(standin.socket_connected)
            assert rig.adapter.port is None  # no HTTP endpoint in Socket Mode

            command = slash_command_payload("a socket fox", user_id="UALICE", channel_id="CSOCK")
            envelope = await standin.send_envelope("slash_commands", command, accepts_response_payload=True)
            assert await standin.wait_for_ack(envelope) == {}
            (upload,) = await rig.uploads(1)
            status = await rig.message_saying(messages.DONE)
            assert (upload.channel_id, upload.thread_ts, jpeg_sizes(upload)) == (
                "CSOCK",
                status.ts,
                [("JPEG", (128, 128))] * 4,
            )

            # Slack re-delivers an envelope it saw no ack for: same payload, retry_attempt 1. No second job.
            retry = await standin.send_envelope("slash_commands", command, retry_attempt=1)
            await standin.wait_for_ack(retry)

            mention = app_mention_event("a socket owl", user_id="UBOB", channel_id="CSOCK")
            standin.user_message("CSOCK", mention["ts"], "UBOB", mention["text"])
            await standin.wait_for_ack(await standin.send_envelope("events_api", event_envelope(mention)))
            second = (await rig.uploads(2))[1]
            assert (second.channel_id, second.thread_ts) == ("CSOCK", mention["ts"])

            (buttons,) = [m for m in standin.thread("CSOCK", status.ts) if m.blocks]
            upscale_1 = buttons.blocks[1]["elements"][0]["action_id"]
            click = block_actions_payload(
                upscale_1, user_id="UALICE", channel_id="CSOCK", message_ts=buttons.ts, thread_ts=buttons.thread_ts
            )
            await standin.wait_for_ack(await standin.send_envelope("interactive", click))
            third = (await rig.uploads(3))[2]
            assert len(third.files) == 1 and third.thread_ts == status.ts

            await standin.wait_for(
                lambda: sum(m.text.startswith(messages.DONE) for m in standin.messages.values()) == 2
            )
            delivered = [r for r in await rig.engine.undelivered() if r.state is JobState.DONE]
            assert delivered == [] and len(standin.completed) == 3
            assert standin.calls_to("apps.connections.open")[0].headers["Authorization"].endswith(standin.app_token)
        finally:
            await rig.stop()
    for secret in (standin.app_token, standin.bot_token):
        assert secret not in caplog.text
