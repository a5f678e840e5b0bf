"""The stand-in Slack's "Sign in with Slack" (OpenID Connect; part of `SlackStandIn`, as on slack.com):

- `GET /openid/connect/authorize?response_type=code&scope=openid ...&client_id&state&nonce&redirect_uri`: the
  consent page for the Slack user the browser is signed in as (`sign_in_as`); `POST` it to allow (a redirect to
  `redirect_uri?code=...&state=...`) or deny (`?error=access_denied`);
- `openid.connect.token` (Web API, form: client_id, client_secret, code, redirect_uri; no bearer token):
  `{"ok": true, "access_token", "token_type": "Bearer", "id_token"}`, or `{"ok": false, "error": "invalid_code"}`;
- `openid.connect.userInfo` (Web API, `Authorization: Bearer <that access token>`): `sub`,
  `https://slack.com/user_id`, `https://slack.com/team_id`, `name`, ... as Slack answers it.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.standins.oauth_pages import Authorizations, GrantError, consent_page, redirect_back

AUTHORIZE_PATH = "/openid/connect/authorize"
METHODS = ("openid.connect.token", "openid.connect.userInfo")
_ERRORS = {"invalid_client": "invalid_client_id", "invalid_grant": "invalid_code"}


@dataclass(frozen=True)
class SlackUser:
    user_id: str
    name: str
    team_id: str


class SlackOIDC:
    def __init__(self, team_id: str) -> None:
        self.team_id = team_id
        self.auth = Authorizations()
        self.client_id = "1234.5678"
        self.client_secret = secrets.token_hex(16)
        self.signed_in: SlackUser | None = None

    def register_redirect(self, redirect_uri: str) -> None:
        known = self.auth.clients.get(self.client_id)
        uris = (*(known.redirect_uris if known else ()), redirect_uri)
        self.auth.register(self.client_id, self.client_secret, *uris)

    def sign_in_as(self, user_id: str, name: str, team_id: str | None = None) -> SlackUser:
        self.signed_in = SlackUser(user_id, name, team_id or self.team_id)
        return self.signed_in

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(AUTHORIZE_PATH, self._authorize_page)
        app.router.add_post(AUTHORIZE_PATH, self._authorize_decision)

    def api(self, method: str, args: dict[str, Any], authorization: str) -> dict[str, Any]:
        if method == "openid.connect.token":
            return self._token(args)
        user = self.auth.subject_for(authorization)
        if not isinstance(user, SlackUser):
            return {"ok": False, "error": "invalid_auth"}
        return {"ok": True, **_claims(user)}

    async def _authorize_page(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.auth.check_authorize(query, {"openid"})
        if self.signed_in is None:
            return web.Response(text="<!doctype html><p>Sign in to your workspace first.</p>", content_type="text/html")
        return consent_page("Slack", self.signed_in.name, AUTHORIZE_PATH, query)

    async def _authorize_decision(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        decision = form.pop("decision", "")
        self.auth.check_authorize(form, {"openid"})
        state = {"state": form["state"]} if "state" in form else {}
        if decision != "allow" or self.signed_in is None:
            raise redirect_back(form["redirect_uri"], error="access_denied", **state)
        raise redirect_back(form["redirect_uri"], code=self.auth.issue_code(form, self.signed_in), **state)

    def _token(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            token, grant = self.auth.exchange(
                str(args.get("code", "")),
                str(args.get("client_id", "")),
                str(args.get("client_secret", "")),
                str(args.get("redirect_uri", "")),
            )
        except GrantError as exc:
            return {"ok": False, "error": _ERRORS.get(exc.error, exc.error)}
        claims = {"iss": "https://slack.com", "aud": grant.client_id, "nonce": grant.nonce, **_claims(grant.subject)}
        return {"ok": True, "access_token": token, "token_type": "Bearer", "id_token": _unsigned_jwt(claims)}


def _claims(user: SlackUser) -> dict[str, Any]:
    return {
        "sub": user.user_id,
        "https://slack.com/user_id": user.user_id,
        "https://slack.com/team_id": user.team_id,
        "name": user.name,
        "email_verified": False,
        "locale": "en-US",
    }


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    """Shaped like Slack's RS256 id_token; the signature is random bytes (the client under test reads the
    userInfo method instead of trusting the token)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "standin"}).encode())
    return f"{header}.{part(json.dumps(claims).encode())}.{part(secrets.token_bytes(32))}"
