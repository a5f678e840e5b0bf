"""The stand-in Discord's OAuth2 provider (part of `DiscordStandIn`, same origin as its REST API, as on discord.com):

- `GET /oauth2/authorize?response_type=code&client_id&scope=identify&state&redirect_uri`: the consent page for
  the user the test has "signed in to Discord" in the browser (`sign_in_as`); `POST` it to allow (a redirect to
  `redirect_uri?code=...&state=...`) or deny (`?error=access_denied&state=...`);
- `POST /api/v10/oauth2/token` (form: grant_type=authorization_code, code, redirect_uri; client credentials by
  HTTP Basic or in the form): `{"access_token", "token_type": "Bearer", "expires_in", "refresh_token", "scope"}`,
  or 400 `{"error": "invalid_grant", ...}`;
- `GET /api/v10/users/@me` with `Authorization: Bearer <access token>` (the bot's own `Bot` token still gets the bot).
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from aiohttp import web

from tests.standins.discord_payloads import User
from tests.standins.oauth_pages import Authorizations, GrantError, consent_page, redirect_back

AUTHORIZE_PATH = "/oauth2/authorize"


class DiscordOAuth:
    def __init__(self) -> None:
        self.auth = Authorizations()
        self.client_id = "standin-oauth-client"
        self.client_secret = secrets.token_urlsafe(16)
        self.signed_in: User | None = None
        """The Discord account the browser is signed in to (None: the consent page says so and offers nothing)."""

    def register_redirect(self, redirect_uri: str) -> None:
        """As in the Developer Portal (OAuth2 → Redirects): only registered URIs get a code."""
        known = self.auth.clients.get(self.client_id)
        uris = (*(known.redirect_uris if known else ()), redirect_uri)
        self.auth.register(self.client_id, self.client_secret, *uris)

    def sign_in_as(self, user: User | None) -> None:
        self.signed_in = user

    def add_routes(self, app: web.Application, api_prefix: str) -> None:
        app.router.add_get(AUTHORIZE_PATH, self._authorize_page)
        app.router.add_post(AUTHORIZE_PATH, self._authorize_decision)
        app.router.add_post(api_prefix + "/oauth2/token", self._token)

    def user_for(self, authorization: str) -> User | None:
        subject = self.auth.subject_for(authorization)
        return subject if isinstance(subject, User) else None

    async def _authorize_page(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.auth.check_authorize(query, {"identify"})
        if self.signed_in is None:
            return web.Response(text="<!doctype html><p>Log in to Discord first.</p>", content_type="text/html")
        return consent_page("Discord", self.signed_in.username, AUTHORIZE_PATH, query)

    async def _authorize_decision(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        decision = form.pop("decision", "")
        self.auth.check_authorize(form, {"identify"})
        state = {"state": form["state"]} if "state" in form else {}
        if decision != "allow" or self.signed_in is None:
            raise redirect_back(form["redirect_uri"], error="access_denied", **state)
        raise redirect_back(form["redirect_uri"], code=self.auth.issue_code(form, self.signed_in), **state)

    async def _token(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        client_id, client_secret = _client_credentials(request, form)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error(400, "unsupported_grant_type", "Unsupported grant type")
        try:
            token, grant = self.auth.exchange(
                form.get("code", ""), client_id, client_secret, form.get("redirect_uri", "")
            )
        except GrantError as exc:
            return _oauth_error(401 if exc.error == "invalid_client" else 400, exc.error, exc.description)
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 604800,
            "refresh_token": secrets.token_urlsafe(30),
            "scope": grant.scope,
        }
        return web.json_response(body, content_type="application/json")


def _client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            client_id, _, secret = base64.b64decode(header[len("Basic ") :]).decode().partition(":")
        except ValueError:
            return "", ""
        return client_id, secret
    return form.get("client_id", ""), form.get("client_secret", "")


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    body: dict[str, Any] = {"error": error, "error_description": description}
    return web.json_response(body, status=status, content_type="application/json")
