"""`imagine serve` as a process against the stand-in Slack (Socket Mode): rejected or missing credentials are one
clear line and exit 2; a `kill -9` in the middle of work loses nothing that was acknowledged and duplicates
nothing."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.standins.slack_requests import slash_command_payload
from tests.standins.slack_server import SlackStandIn
from tests.support import serve_environment, start_serve, stopped

pytestmark = pytest.mark.timeout(300)


def serve_env(tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn, **slack: str) -> dict[str, str]:
    settings = {
        "bot_token": standin.bot_token,
        "app_token": standin.app_token,
        "mode": "socket",
        "api_base": standin.api_url,
    } | slack
    return serve_environment(
        tmp_path, tiny_model_dir, **{f"SLACK__{key.upper()}": value for key, value in settings.items()}
    )


async def ended(process: asyncio.subprocess.Process, within: float = 120.0) -> int:
    async with asyncio.timeout(within):
        return await process.wait()


@pytest.mark.parametrize(
    ("slack", "message"),
    [
        (
            {"app_token": "xapp-wrong"},
            "error: Slack rejected slack.app_token (invalid_auth): check IMAGINE_SLACK__APP_TOKEN",
        ),
        (
            {"bot_token": "xoxb-wrong"},
            "error: Slack rejected slack.bot_token (invalid_auth): check IMAGINE_SLACK__BOT_TOKEN",
        ),
        (
            {"mode": "http", "signing_secret": ""},
            "error: slack.signing_secret is empty: set IMAGINE_SLACK__SIGNING_SECRET",
        ),
    ],
    ids=["wrong app token", "wrong bot token", "no signing secret"],
)
async def test_serve_with_bad_slack_credentials_exits_with_one_clear_line(
    tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn, slack: dict[str, str], message: str
) -> None:
    log_path = tmp_path / "serve.log"
    process = await start_serve(serve_env(tmp_path, tiny_model_dir, standin, **slack), log_path)
    try:
        code = await ended(process, 240)
    finally:
        await stopped(process)
    output = log_path.read_text()
    assert code == 2, output
    assert message in output
    assert "Traceback" not in output and "wrong" not in output.replace(message, "")


async def test_kill_9_mid_work_then_restart_delivers_every_acknowledged_command_once(
    tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn
) -> None:
    # Every Slack secret set, and debug logging: none of them may appear in the log (the signing secret is unused
    # in Socket Mode, but a misconfigured one must not be printed either).
    env = serve_env(tmp_path, tiny_model_dir, standin, signing_secret="s3cret-signing-7d1e") | {
        "IMAGINE_LOG__LEVEL": "debug"
    }
    log_path = tmp_path / "serve.log"
    # Slack refuses every upload in the first process, so it is killed holding finished, undelivered work.
    standin.fail("files.completeUploadExternal", 500, times=10_000)
    first = await start_serve(env, log_path)
    try:
        await standin.wait_for(standin.socket_connected, 240)
        for channel in ("CANN", "CBEN"):
            await acknowledged(standin, slash_command_payload(f"a kite over {channel}", channel_id=channel))
        await standin.wait_for(
            lambda: (
                {c.args.get("channel_id") for c in standin.calls_to("files.completeUploadExternal")} >= {"CANN", "CBEN"}
            ),
            120,
        )
        # Acknowledged, then killed at once: it may not even have reached the engine.
        await acknowledged(standin, slash_command_payload("sent just before the kill", channel_id="CCAT"))
        first.send_signal(signal.SIGKILL)
        assert await ended(first) == -signal.SIGKILL
    finally:
        await stopped(first)
    assert standin.completed == []
    standin.clear_failures()

    second = await start_serve(env, log_path)
    try:
        await standin.wait_for(lambda: len(standin.completed) == 3, 240)
        second.send_signal(signal.SIGTERM)
        assert await ended(second) == 0, log_path.read_text()[-3000:]
    finally:
        await stopped(second)
    assert sorted((u.channel_id, len(u.files)) for u in standin.completed) == [("CANN", 4), ("CBEN", 4), ("CCAT", 4)]
    output = log_path.read_text()
    assert "Traceback" not in output and " DEBUG " in output
    for secret in (standin.bot_token, standin.app_token, "s3cret-signing-7d1e"):
        assert secret not in output


async def acknowledged(standin: SlackStandIn, command: dict[str, str]) -> None:
    envelope = await standin.send_envelope("slash_commands", command, accepts_response_payload=True)
    await standin.wait_for_ack(envelope, 60)
