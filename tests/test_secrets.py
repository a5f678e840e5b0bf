"""Every secret set at once, in one `imagine serve` process with debug logging: the Discord bot token and OAuth2
client secret, the Slack bot token, app token, signing secret and OpenID Connect client secret, the web session
key and the database password. The bot then works on both platforms, moderators sign in with Discord and with
Slack, and every page and probe is fetched; not one of the secrets is in the log, in anything the bots posted or
in any web response (status line, headers or body). And `imagine worker`, on a Redis and a PostgreSQL that both
want a password, logs neither password and shows neither on its probes."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest
from cryptography.fernet import Fernet

from bots import messages
from engine.redis_streams import RedisJobQueue
from engine.requests import GenerationRequest, JobState
from tests.discord.test_discord_serve import web_address
from tests.redis_support import PrivateRedis, frontend, scale_out_settings
from tests.standins.discord_server import DiscordStandIn
from tests.standins.slack_requests import slash_command_payload
from tests.standins.slack_server import SlackStandIn
from tests.storage_support import postgres_url  # noqa: F401 (a fixture)
from tests.support import serve_environment, start_serve, stopped
from tests.test_redis_processes import logged, probe, start_worker
from tests.test_redis_queue import finished
from tests.web.mod_support import authorize_at_provider

pytestmark = pytest.mark.timeout(300)
SIGNING_SECRET = "s3cret-signing-41c9e"
DATABASE_PASSWORD = "pg-pass-8e2d0b"
REDIS_PASSWORD = "redis-pass-5b7f3a"


async def test_no_secret_reaches_a_log_line_a_post_or_a_web_response(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    session_secret = Fernet.generate_key().decode()
    async with DiscordStandIn() as discord, SlackStandIn() as slack:
        moderator = discord.make_user("modmin")
        discord.add_member(moderator, [discord.moderator_role.id])
        secrets = {
            "discord.token": discord.token,
            "discord.client_secret": discord.oauth.client_secret,
            "slack.bot_token": slack.bot_token,
            "slack.app_token": slack.app_token,
            "slack.signing_secret": SIGNING_SECRET,
            "slack.client_secret": slack.oidc.client_secret,
            "web.session_secret": session_secret,
            "the database password": DATABASE_PASSWORD,
        }
        env = serve_environment(
            tmp_path,
            tiny_model_dir,
            LOG__LEVEL="debug",
            STORE__URL=postgres_url.replace("postgres@", f"postgres:{DATABASE_PASSWORD}@", 1),
            WEB__SESSION_SECRET=session_secret,
            DISCORD__TOKEN=discord.token,
            DISCORD__API_BASE=discord.api_base,
            DISCORD__GATEWAY_URL=discord.gateway_url,
            DISCORD__MODERATOR_ROLE_IDS=f"[{discord.moderator_role.id}]",
            DISCORD__CLIENT_ID=discord.oauth.client_id,
            DISCORD__CLIENT_SECRET=discord.oauth.client_secret,
            DISCORD__OAUTH_AUTHORIZE_URL=f"{discord.origin}/oauth2/authorize",
            SLACK__MODE="socket",
            SLACK__BOT_TOKEN=slack.bot_token,
            SLACK__APP_TOKEN=slack.app_token,
            SLACK__SIGNING_SECRET=SIGNING_SECRET,
            SLACK__API_BASE=slack.api_url,
            SLACK__MODERATOR_USER_IDS='["UMOD"]',
            SLACK__CLIENT_ID=slack.oidc.client_id,
            SLACK__CLIENT_SECRET=slack.oidc.client_secret,
            SLACK__OIDC_AUTHORIZE_URL=f"{slack.base_url}/openid/connect/authorize",
        )
        log_path = tmp_path / "serve.log"
        process = await start_serve(env, log_path)
        try:
            await discord.wait_until(lambda: discord.synced_commands, 240, what="the bot to connect to Discord")
            await slack.wait_for(slack.socket_connected, 240)
            await discord.send_command(discord.make_user("alice"), {"prompt": "a lighthouse at dawn"})
            envelope = await slack.send_envelope(
                "slash_commands", slash_command_payload("a kite", channel_id="CKITE"), accepts_response_payload=True
            )
            await slack.wait_for_ack(envelope, 60)
            await discord.wait_until(lambda: discord.messages_with_files(), 120, what="the Discord images")
            await slack.wait_for(lambda: slack.completed, 120)
            origin = web_address(log_path.read_text())
            discord.oauth.register_redirect(f"{origin}/mod/auth/discord/callback")
            slack.oidc.register_redirect(f"{origin}/mod/auth/slack/callback")
            discord.oauth.sign_in_as(moderator)
            slack.oidc.sign_in_as("UMOD", "slackmod")
            responses = await browse(origin)
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(120):
                assert await process.wait() == 0
        finally:
            await stopped(process)
        log = log_path.read_text()
        posted = [message.content for message in discord.messages.values()]
        posted += [json.dumps([message.text, message.blocks]) for message in slack.messages.values()]

    assert " DEBUG " in log and "Traceback" not in log
    assert messages.DONE in "".join(posted) and len(responses) > 10
    signed_in = [body for _, body in responses if "Sign out" in body]
    assert len(signed_in) >= 2, "neither sign-in reached the dashboard"
    for name, secret in secrets.items():
        assert secret not in log, f"{name} is in the log"
        assert not [text for text in posted if secret in text], f"{name} is in a post"
        assert not [what for what, body in responses if secret in what + body], f"{name} is in a web response"


async def browse(origin: str) -> list[tuple[str, str]]:
    """Every page and probe, signed out, then signed in with Discord and with Slack: (status line and headers,
    body) of each response, redirects included."""
    responses: list[tuple[str, str]] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:

        async def get(url: str) -> aiohttp.ClientResponse:
            response = await http.get(url, allow_redirects=False)
            responses.append((f"{response.status} {dict(response.headers)}", await response.text()))
            return response

        signed_out = ("/", "/healthz", "/readyz", "/metrics", "/mod", "/mod/login", "/no-such-page")
        for path in signed_out:
            await get(origin + path)
        for provider in ("discord", "slack"):
            started = await get(f"{origin}/mod/auth/{provider}")
            callback = await authorize_at_provider(started.headers["Location"])
            answer = await get(callback)
            assert answer.status == 303, responses[-1]
            for path in ("/mod", "/mod/users", "/mod/audit", "/mod/stats"):
                await get(origin + path)
            http.cookie_jar.clear()
    return responses


async def test_a_worker_shows_no_password_of_the_store_or_redis(
    tmp_path: Path,
    tiny_model_dir: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    redis = PrivateRedis(tmp_path / "redis", password=REDIS_PASSWORD)
    redis.start()
    store_url = postgres_url.replace("postgres@", f"postgres:{DATABASE_PASSWORD}@", 1)
    prefix = "imagine-secrets"
    env = serve_environment(
        tmp_path,
        tiny_model_dir,
        LOG__LEVEL="debug",
        ENGINE__QUEUE="redis",
        ENGINE__REDIS_URL=redis.url,
        ENGINE__REDIS_PREFIX=prefix,
        STORE__URL=store_url,
    )
    log_path = tmp_path / "worker.log"
    worker = await start_worker(env, "w1", log_path)
    try:
        settings = scale_out_settings(tmp_path, tiny_model_dir, store_url, prefix, redis_url=redis.url)
        queue = RedisJobQueue(frontend(settings, "f1"))
        await queue.start()
        try:
            job = await queue.submit(GenerationRequest("a lighthouse", size=(64, 64), steps=1, num_images=1))
            outcome = await finished(job)
        finally:
            await queue.shutdown()
        await logged(log_path, "is taking jobs")
        responses = [await probe(log_path, path) for path in ("/healthz", "/readyz", "/metrics")]
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(120):
            assert await worker.wait() == 0
    finally:
        await stopped(worker)
        redis.kill()
    log = log_path.read_text()
    assert outcome.state is JobState.DONE and [status for status, _ in responses] == [200, 200, 200]
    assert " DEBUG " in log and "Traceback" not in log
    for secret in (DATABASE_PASSWORD, REDIS_PASSWORD):
        assert secret not in log and not [body for _, body in responses if secret in body]
