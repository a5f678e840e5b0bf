"""The moderators' dashboard at /mod: sign-in (Discord, Slack, local accounts), the review queue, users, the
audit log and a chart. One call mounts it on the service's aiohttp application (after the web foundation:
templates, sessions, CSRF and security headers):

    register_dashboard(app, service)        # service: bots.service.Service, or anything with its parts

Modules: `auth.py` (sessions, the guard, the sign-in flows), `oauth_discord.py` / `oauth_slack.py` (the
providers and who may moderate), `local_accounts.py` (argon2 accounts), `throttle.py` (sign-in attempts),
`pages.py` (the pages), `queries.py` (read-only views), `chart.py` (the SVG chart), `context.py` (shared state).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import aiohttp_jinja2
from aiohttp import web

from bots.web.mod import auth, pages
from bots.web.mod.context import DASHBOARD, Backend, Dashboard
from bots.web.mod.local_accounts import LocalAccounts
from bots.web.mod.oauth_discord import DiscordSignIn
from bots.web.mod.oauth_slack import SlackSignIn
from bots.web.mod.throttle import SignInThrottle

__all__ = ["register_dashboard"]

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


def register_dashboard(app: web.Application, backend: Backend, *, clock: Callable[[], float] = time.time) -> None:
    settings = backend.settings
    dashboard = Dashboard(
        backend,
        LocalAccounts(backend.database, clock=clock),
        SignInThrottle.for_service(settings, clock),
        slack=SlackSignIn(settings.slack) if _slack_sign_in(backend) else None,
        clock=clock,
    )
    app[DASHBOARD] = dashboard
    app.on_cleanup.append(lambda _: dashboard.throttle.close())
    app.cleanup_ctx.append(_discord_sign_in(dashboard))
    templates = aiohttp_jinja2.get_env(app)  # the web foundation's environment (bots/web/app.py)
    templates.filters["when"] = _when
    templates.filters["iso"] = _iso
    app.add_routes(
        [
            web.get("/mod", pages.queue),
            web.post("/mod/review/{item}/{decision:approve|reject}", pages.decide),
            web.get(r"/mod/review/{item}/image/{index:\d+}", pages.withheld_image),
            web.get("/mod/users", pages.users),
            web.post("/mod/users/{action:ban|unban|clear-strikes}", pages.user_action),
            web.get("/mod/audit", pages.audit),
            web.get("/mod/stats", pages.stats),
            web.get(auth.LOGIN_PATH, auth.show_login),
            web.post(auth.LOGIN_PATH, auth.local_sign_in),
            web.get("/mod/auth/{provider:discord|slack}", auth.start_sign_in),
            web.get("/mod/auth/{provider:discord|slack}/callback", auth.finish_sign_in),
            web.post("/mod/logout", auth.sign_out),
        ]
    )


def _slack_sign_in(backend: Backend) -> bool:
    slack = backend.settings.slack
    return bool(slack.client_id and slack.client_secret and slack.bot_token)


def _discord_sign_in(dashboard: Dashboard) -> Callable[[web.Application], AsyncIterator[None]]:
    """Discord sign-in needs an HTTP client: made when the server starts, closed when it stops."""

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        discord = dashboard.settings.discord
        if not (discord.client_id and discord.client_secret and discord.token):
            yield
            return
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            dashboard.discord = DiscordSignIn(discord, http)
            yield
            dashboard.discord = None

    return lifetime


def _when(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix_s))


def _iso(unix_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))
