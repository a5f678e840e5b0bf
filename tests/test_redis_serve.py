"""Scale-out with every part a process: two chat frontends (`imagine serve` for the stand-in Discord and for the
stand-in Slack, engine.queue = redis: they load no model) and one GPU worker (`imagine worker`), on the real Redis
and PostgreSQL. Each frontend delivers its own users' images once; a frontend SIGKILLed while a job of its runs on
the worker delivers that job, once, after its restart (queued once: the worker finished it meanwhile)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from engine.requests import JobState
from engine.store import JobRecord, JobStore
from tests.redis_support import REDIS_URL, redis_prefix  # noqa: F401 (a fixture)
from tests.slack.test_slack_serve import acknowledged
from tests.standins.discord_server import DiscordStandIn
from tests.standins.slack_requests import slash_command_payload
from tests.standins.slack_server import SlackStandIn
from tests.storage_support import postgres_url  # noqa: F401 (a fixture)
from tests.support import serve_environment, start_serve
from tests.test_redis_processes import _read, logged, start_worker

pytestmark = pytest.mark.timeout(300)
UPLOAD = r"/webhooks/\d+/[^/]+"


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(120):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
    return process.returncode if process.returncode is not None else -1


async def running_job(store_url: str) -> JobRecord:
    store = await JobStore.open(store_url)
    try:
        for _ in range(6000):
            records = await store.in_states([JobState.RUNNING])
            if records:
                return records[0]
            await asyncio.sleep(0.02)
    finally:
        await store.close()
    raise AssertionError("no job started running")


async def test_two_frontends_and_a_worker_as_processes_and_a_frontend_killed_mid_job_delivers_after_restart(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
    redis_prefix: str,  # noqa: F811
) -> None:
    common = {
        "ENGINE__QUEUE": "redis",
        "ENGINE__REDIS_URL": REDIS_URL,
        "ENGINE__REDIS_PREFIX": redis_prefix,
        "ENGINE__HEARTBEAT_S": "0.2",
        "ENGINE__RECLAIM_AFTER_HEARTBEATS": "4",
        "STORE__URL": postgres_url,
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "discord", "slack")}
    async with DiscordStandIn() as discord, SlackStandIn() as slack:
        discord_env = serve_environment(
            tmp_path,
            tiny_model_dir,
            **common,
            ENGINE__FRONTEND_ID="discord-1",
            ENGINE__STEPS="50",  # the frontend fixes a job's steps: long enough to be killed while it runs
            DISCORD__TOKEN=discord.token,
            DISCORD__API_BASE=discord.api_base,
            DISCORD__GATEWAY_URL=discord.gateway_url,
        )
        slack_env = serve_environment(
            tmp_path,
            tiny_model_dir,
            **common,
            ENGINE__FRONTEND_ID="slack-1",
            SLACK__BOT_TOKEN=slack.bot_token,
            SLACK__APP_TOKEN=slack.app_token,
            SLACK__MODE="socket",
            SLACK__API_BASE=slack.api_url,
        )
        processes = {
            "worker": await start_worker(serve_environment(tmp_path, tiny_model_dir, **common), "gpu", logs["worker"]),
            "discord": await start_serve(discord_env, logs["discord"]),
            "slack": await start_serve(slack_env, logs["slack"]),
        }
        try:
            await discord.wait_until(lambda: discord.synced_commands, 240, what="the Discord frontend connected")
            await slack.wait_for(slack.socket_connected, 240)
            await logged(logs["worker"], "is taking jobs")
            ann, ben = discord.make_user("ann"), discord.make_user("ben")
            first = await discord.send_command(ann, {"prompt": "a kite over the dunes"})
            await acknowledged(slack, slash_command_payload("a heron at dusk", channel_id="CSLK"))
            await discord.wait_until(lambda: len(discord.messages_with_files()) == 1, 120, what="Discord's images")
            await slack.wait_for(lambda: len(slack.completed) == 1, 120)

            second = await discord.send_command(ben, {"prompt": "rendering while its frontend dies"})
            running = await running_job(postgres_url)  # on the worker, its frontend waiting for its events
            processes["discord"].send_signal(signal.SIGKILL)
            await processes["discord"].wait()
            processes["discord"] = await start_serve(discord_env, logs["discord"])
            await discord.wait_until(
                lambda: len(discord.messages_with_files()) == 2, 240, what="the delivery after the restart"
            )
        finally:
            codes = {name: await stop(process) for name, process in processes.items()}
        for command in (first, second):  # one images message per command, on its own interaction
            uploads = discord.requests_to("POST", rf"/webhooks/\d+/{command.token}")
            assert len([r for r in uploads if r.files and r.status == 200]) == 1
        assert [(upload.channel_id, len(upload.files)) for upload in slack.completed] == [("CSLK", 4)]
        assert running.request.prompt == "rendering while its frontend dies"
    assert codes == {"worker": 0, "discord": 0, "slack": 0}
    texts = {name: await asyncio.to_thread(_read, path) for name, path in logs.items()}
    assert all("Traceback" not in text for text in texts.values())
    assert "loaded model" in texts["worker"]
    assert "loaded model" not in texts["discord"] and "loaded model" not in texts["slack"]  # frontends: no model
