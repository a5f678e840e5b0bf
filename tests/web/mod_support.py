"""Helpers for the dashboard's tests: settings that point sign-in at the stand-in providers, the web app with the
dashboard mounted, and the OAuth redirect dance done over HTTP as a browser does it (the browser tests click)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import yarl
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bots.conversation import Conversation
from bots.web.app import web_app
from bots.web.mod import register_dashboard
from config.settings import Settings
from engine.api import JobQueue
from moderation.admission import Admission
from storage.database import Database
from tests.standins.discord_server import DiscordStandIn
from tests.standins.slack_server import SlackStandIn

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def with_sign_in(settings: Settings, discord: DiscordStandIn | None, slack: SlackStandIn | None) -> Settings:
    """Discord and/or Slack sign-in pointed at the stand-ins (the bot token and moderators as the rigs set them)."""
    if discord is not None:
        settings = replace(
            settings,
            discord=replace(
                settings.discord,
                token=discord.token,
                api_base=discord.api_base,
                moderator_role_ids=[int(discord.moderator_role.id)],
                client_id=discord.oauth.client_id,
                client_secret=discord.oauth.client_secret,
                oauth_authorize_url=f"{discord.origin}/oauth2/authorize",
            ),
        )
    if slack is not None:
        settings = replace(
            settings,
            slack=replace(
                settings.slack,
                bot_token=slack.bot_token,
                api_base=slack.api_url,
                client_id=slack.oidc.client_id,
                client_secret=slack.oidc.client_secret,
                oidc_authorize_url=f"{slack.base_url}/openid/connect/authorize",
            ),
        )
    return settings


@dataclass
class ServiceParts:
    """The parts of a running service the dashboard uses, without the engine and adapters (for the sign-in and
    refusal tests; the flows with held prompts run the whole `Service`)."""

    settings: Settings
    database: Database
    admission: Admission | None
    conversation: Conversation | None = None
    jobs: Any = None

    @property
    def engine(self) -> JobQueue:
        return self.jobs


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Dashboard:
    client: TestClient[web.Request, web.Application]
    clock: Clock = field(default_factory=Clock)

    @property
    def origin(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def csrf_token(self, path: str = "/mod/login") -> str:
        response = await self.client.get(path)
        found = CSRF_FIELD.search(await response.text())
        assert found, f"no CSRF field on {path}"
        return found.group(1)

    async def post_form(self, path: str, form: dict[str, str], *, token_from: str = "/mod") -> aiohttp.ClientResponse:
        """A form posted as the dashboard's own page posts it: with the page's CSRF token and this origin."""
        token = await self.csrf_token(token_from)
        return await self.client.post(
            path, data={"csrf_token": token, **form}, headers={"Origin": self.origin}, allow_redirects=False
        )


@asynccontextmanager
async def dashboard(backend: Any, clock: Clock | None = None) -> AsyncIterator[Dashboard]:
    clock = clock or Clock()
    app = web_app(backend.settings.web, _ready)
    register_dashboard(app, backend, clock=clock)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Dashboard(client, clock)
    finally:
        await client.close()


async def _ready() -> dict[str, bool]:
    return {"serving": True}


async def follow_provider(
    client: TestClient[web.Request, web.Application], start: str
) -> tuple[str, aiohttp.ClientResponse]:
    """From the dashboard's sign-in link to the provider's redirect back, as a browser that clicks "Authorize":
    returns the callback URL and the dashboard's answer to it (not followed further)."""
    started = await client.get(start, allow_redirects=False)
    assert started.status == 302, await started.text()
    callback = await authorize_at_provider(started.headers["Location"])
    return callback, await client.get(callback_path(callback), allow_redirects=False)


async def authorize_at_provider(authorize_url: str) -> str:
    """At the stand-in provider's authorize page, click "Authorize": the URL it sends the browser back to."""
    async with aiohttp.ClientSession() as browser:  # the provider is another origin: its own "tab"
        page = await browser.get(authorize_url)
        assert page.status == 200, await page.text()
        found = re.findall(r'name="([^"]+)" value="([^"]*)"', await page.text())
        fields = {html.unescape(name): html.unescape(value) for name, value in found}
        action = authorize_url.split("?")[0]
        decided = await browser.post(action, data={**fields, "decision": "allow"}, allow_redirects=False)
        assert decided.status == 302, await decided.text()
        return decided.headers["Location"]


def callback_path(callback_url: str) -> str:
    return yarl.URL(callback_url).path_qs
