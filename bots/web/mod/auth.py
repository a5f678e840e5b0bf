"""Who is signed in to the dashboard, and how they got there: Discord, Slack or a local account.

A moderator in the session is `{"key": "discord:123", "name": ..., "at": <unix time>}`; the key is the same
platform-qualified id the chat buttons and the audit log use, so a decision reads alike wherever it was made.
The identity provider only says who someone is. Whether they may moderate is the service's own data, asked at
sign-in and again at most every RECHECK_S while they work (a role taken away ends the session within a minute):
Discord roles through the bot (`oauth_discord.py`), Slack user ids or user group (`oauth_slack.py`), local
accounts in the database (`local_accounts.py`). A session is new on every sign-in (no fixation) and a sign-in
lasts `dashboard.session_max_age_s`.

    @moderator_only                    # GET without a moderator: redirect to /mod/login; anything else: 403
    async def page(request): moderator = request[MODERATOR]; ...
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bots.web.app import render_page
from bots.web.mod.context import DASHBOARD, Dashboard
from bots.web.mod.oauth_discord import SignInFailed
from bots.web.mod.throttle import ThrottleUnavailable
from bots.web.sessions import fresh_session, get_session

log = logging.getLogger(__name__)

SESSION_MODERATOR = "moderator"
SESSION_FLOW = "sign_in_flow"
FLOW_MAX_AGE_S = 600.0
"""From the redirect to the provider to its callback."""
RECHECK_S = 60.0
LOGIN_PATH = "/mod/login"
PROVIDERS = ("discord", "slack")
SIGN_IN_UNAVAILABLE = "Sign-in is unavailable for a moment. Please try again shortly."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Moderator:
    key: str
    """"discord:123", "slack:U123" or "local:alice": the audit log's actor."""
    name: str

    @property
    def via(self) -> str:
        return self.key.partition(":")[0]


MODERATOR: web.RequestKey[Moderator] = web.RequestKey("moderator", Moderator)


def moderator_only(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        moderator = await current_moderator(request)
        if moderator is None:
            if request.method in ("GET", "HEAD"):
                raise web.HTTPFound(LOGIN_PATH)
            raise web.HTTPForbidden(text="Sign in as a moderator first.")
        request[MODERATOR] = moderator
        return await handler(request)

    return guarded


async def current_moderator(request: web.Request) -> Moderator | None:
    session = await get_session(request)
    stored = session.get(SESSION_MODERATOR)
    if not isinstance(stored, dict):
        return None
    dashboard = request.app[DASHBOARD]
    now = dashboard.clock()
    if now - float(stored.get("at", 0)) > dashboard.settings.dashboard.session_max_age_s:
        session.pop(SESSION_MODERATOR, None)
        return None
    moderator = Moderator(str(stored.get("key", "")), str(stored.get("name", "")))
    if now - float(stored.get("checked", 0)) > RECHECK_S:
        if not await _may_moderate(dashboard, moderator):
            log.info("%s is no longer a moderator: signed out of the dashboard", moderator.key)
            session.pop(SESSION_MODERATOR, None)
            return None
        session[SESSION_MODERATOR] = {**stored, "checked": now}
    return moderator


async def signed_in_moderator(request: web.Request) -> Moderator | None:
    """The moderator signed in to the dashboard in this browser session, if any (for pages outside /mod: the
    playground's Delete); None when the dashboard does not run."""
    if DASHBOARD not in request.app:
        return None
    return await current_moderator(request)


async def _may_moderate(dashboard: Dashboard, moderator: Moderator) -> bool:
    platform, _, user_id = moderator.key.partition(":")
    try:
        if platform == "discord" and dashboard.discord is not None:
            return await dashboard.discord.is_moderator(user_id)
        if platform == "slack" and dashboard.slack is not None:
            return await dashboard.slack.is_moderator(user_id)
        if platform == "local":
            return user_id in await dashboard.accounts.names()
    except SignInFailed as exc:
        log.warning("could not check %s's moderator status (%s): refused until it can be", moderator.key, exc)
    return False


# ---- the sign-in page and local accounts --------------------------------------------------------------------


async def login_page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    dashboard = request.app[DASHBOARD]
    context = {
        "page": "login",
        "flash": "",
        "error": error,
        "discord": dashboard.discord is not None,
        "slack": dashboard.slack is not None,
        "moderator": await current_moderator(request),
    }
    return await render_page(request, "mod/login.html", context, status=status)


async def show_login(request: web.Request) -> web.Response:
    return await login_page(request)


async def local_sign_in(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    dashboard.admission()  # while the service starts: 503, before an attempt is counted or checked
    form = await request.post()
    name, password = str(form.get("name", "")).strip().lower(), str(form.get("password", ""))
    refused = await _throttled(request, dashboard, f"local:{name}")
    if refused is not None:
        return refused
    account = await dashboard.accounts.verify(name, password)
    if account is None:
        await dashboard.audit().record_refused(f"local:{name[:64]}", "sign_in", "dashboard", "wrong name or password")
        return await login_page(request, error="Wrong name or password.", status=403)
    return await _signed_in(request, Moderator(f"local:{account}", account))


# ---- Discord and Slack: authorization code flow --------------------------------------------------------------


async def start_sign_in(request: web.Request) -> web.StreamResponse:
    """Send the browser to the provider with a fresh `state` (and OIDC `nonce`) remembered in the session."""
    dashboard = request.app[DASHBOARD]
    provider = request.match_info["provider"]
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
    redirect_uri = callback_url(request, provider)
    if provider == "discord" and dashboard.discord is not None:
        url = dashboard.discord.authorize_url(redirect_uri, state)
    elif provider == "slack" and dashboard.slack is not None:
        url = dashboard.slack.authorize_url(redirect_uri, state, nonce)
    else:
        raise web.HTTPNotFound(text="That sign-in is not set up here.")
    session = await get_session(request)
    session[SESSION_FLOW] = {"provider": provider, "state": state, "nonce": nonce, "at": dashboard.clock()}
    raise web.HTTPFound(url)


async def finish_sign_in(request: web.Request) -> web.StreamResponse:
    """The provider's redirect back: the state must be the one this browser was sent with, once; then the code
    is exchanged, the user identified, and the service decides whether they may moderate."""
    dashboard = request.app[DASHBOARD]
    dashboard.admission()  # while the service starts: 503, and the flow stays usable for a retry
    provider = request.match_info["provider"]
    session = await get_session(request)
    flow = session.pop(SESSION_FLOW, None)  # one use, whatever happens next
    if not _state_matches(flow, provider, request.query.get("state", ""), dashboard.clock()):
        log.info("refused a %s sign-in callback with a state this browser was not given", provider)
        return await login_page(request, error="That sign-in link has expired. Please try again.", status=403)
    if "code" not in request.query:
        return await login_page(request, error="Sign-in was cancelled.", status=403)
    refused = await _throttled(request, dashboard)
    if refused is not None:
        return refused
    try:
        moderator = await _identify(dashboard, provider, request.query["code"], callback_url(request, provider))
    except SignInFailed as exc:
        log.warning("%s sign-in failed: %s", provider, exc)
        return await login_page(request, error=f"Sign-in with {provider.title()} failed. Please try again.", status=403)
    if moderator is None:
        return await login_page(request, error="You are not a moderator here.", status=403)
    return await _signed_in(request, moderator)


async def _identify(dashboard: Dashboard, provider: str, code: str, redirect_uri: str) -> Moderator | None:
    """The moderator this code belongs to, or None (audited) when the service does not let them moderate."""
    if provider == "discord" and dashboard.discord is not None:
        discord_user = await dashboard.discord.identify(code, redirect_uri)
        key, name = f"discord:{discord_user.id}", discord_user.name
        allowed = await dashboard.discord.is_moderator(discord_user.id)
    elif provider == "slack" and dashboard.slack is not None:
        slack_user = await dashboard.slack.identify(code, redirect_uri)
        key, name = f"slack:{slack_user.id}", slack_user.name
        allowed = await dashboard.slack.is_moderator(slack_user.id)
    else:
        raise SignInFailed(f"{provider} sign-in is not configured")
    if not allowed:
        await dashboard.audit().record_refused(key, "sign_in", "dashboard", "not a moderator")
        return None
    return Moderator(key, name)


def _state_matches(flow: Any, provider: str, state: str, now: float) -> bool:
    if not isinstance(flow, dict) or flow.get("provider") != provider or not state:
        return False
    if now - float(flow.get("at", 0)) > FLOW_MAX_AGE_S:
        return False
    return hmac.compare_digest(str(flow.get("state", "")), state)


def callback_url(request: web.Request, provider: str) -> str:
    """Where the provider sends the browser back; register exactly this URL with the provider."""
    return f"{public_origin(request)}/mod/auth/{provider}/callback"


def public_origin(request: web.Request) -> str:
    configured = request.app[DASHBOARD].settings.web.public_url.rstrip("/")
    return configured or f"{request.scheme}://{request.host}"


# ---- signed in, signed out ----------------------------------------------------------------------------------


async def _signed_in(request: web.Request, moderator: Moderator) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    session = await fresh_session(request)
    now = dashboard.clock()
    session[SESSION_MODERATOR] = {"key": moderator.key, "name": moderator.name, "at": now, "checked": now}
    await dashboard.audit().record(moderator.key, "sign_in", "dashboard", f"via {moderator.via}")
    raise web.HTTPSeeOther("/mod")


async def sign_out(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    session.invalidate()
    raise web.HTTPSeeOther(LOGIN_PATH)


async def _throttled(request: web.Request, dashboard: Dashboard, account: str | None = None) -> web.Response | None:
    """Count this sign-in attempt; the page that refuses it when there were too many (or they cannot be counted)."""
    try:
        wait_s = await dashboard.throttle.attempt(_address(request), account)
    except ThrottleUnavailable as exc:
        log.warning("sign-in refused: %s", exc)
        return await login_page(request, error=SIGN_IN_UNAVAILABLE, status=503)
    return None if wait_s is None else await _too_many(request, wait_s)


async def _too_many(request: web.Request, wait_s: float) -> web.Response:
    minutes = max(1, round(wait_s / 60))
    text = f"Too many sign-in attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    response = await login_page(request, error=text, status=429)
    response.headers["Retry-After"] = str(int(wait_s) + 1)
    return response


def _address(request: web.Request) -> str:
    return request.remote or "unknown"
