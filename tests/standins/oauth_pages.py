"""What the stand-in identity providers (Discord OAuth2, Sign in with Slack) share: one-time authorization
codes bound to a client, a redirect URI and the user who consented, and the consent page a browser submits.

Modelled on RFC 6749 where a client can get it wrong: a code works once and only for the client and redirect URI
it was issued to (a second use is `invalid_grant`); a redirect URI that is not registered gets an error page, never a
redirect; the `state` the client sent comes back unchanged (checking it is the client's job)."""

from __future__ import annotations

import html
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

CODE_LIFETIME_S = 600.0


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclass
class Grant:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    subject: Any
    """The provider's user who consented."""
    nonce: str = ""
    issued_at: float = field(default_factory=time.monotonic)
    used: bool = False


class GrantError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class Authorizations:
    """Codes and access tokens of one provider."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.grants: dict[str, Grant] = {}
        self.tokens: dict[str, Any] = {}
        self.exchanges: list[tuple[str, str]] = []
        """(code, outcome) for every code exchange attempted: "ok" or the OAuth error."""

    def register(self, client_id: str, client_secret: str, *redirect_uris: str) -> Client:
        client = Client(client_id, client_secret, tuple(redirect_uris))
        self.clients[client_id] = client
        return client

    def check_authorize(self, query: dict[str, str], scopes_needed: set[str]) -> Client:
        """Raises web.HTTPBadRequest (a page, no redirect) for a bad client or redirect URI."""
        client = self.clients.get(query.get("client_id", ""))
        if client is None:
            raise web.HTTPBadRequest(text="Unknown application (client_id)")
        if query.get("redirect_uri") not in client.redirect_uris:
            raise web.HTTPBadRequest(text="Invalid OAuth2 redirect_uri")
        if query.get("response_type") != "code":
            raise web.HTTPBadRequest(text="Unsupported response_type")
        if not scopes_needed <= set(query.get("scope", "").split()):
            raise web.HTTPBadRequest(text="Invalid scope")
        return client

    def issue_code(self, query: dict[str, str], subject: Any) -> str:
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(
            code, query["client_id"], query["redirect_uri"], query.get("scope", ""), subject, query.get("nonce", "")
        )
        return code

    def exchange(self, code: str, client_id: str, client_secret: str, redirect_uri: str) -> tuple[str, Grant]:
        """A code for an access token, once; raises GrantError otherwise."""
        try:
            client = self.clients.get(client_id)
            if client is None or not secrets.compare_digest(client.client_secret, client_secret):
                raise GrantError("invalid_client", "Invalid client credentials")
            grant = self.grants.get(code)
            if grant is None or grant.client_id != client_id:
                raise GrantError("invalid_grant", 'Invalid "code" in request.')
            if grant.used or time.monotonic() - grant.issued_at > CODE_LIFETIME_S:
                raise GrantError("invalid_grant", 'Invalid "code" in request.')
            if grant.redirect_uri != redirect_uri:
                raise GrantError("invalid_grant", 'Invalid "redirect_uri" in request.')
        except GrantError as exc:
            self.exchanges.append((code, exc.error))
            raise
        grant.used = True
        token = secrets.token_urlsafe(30)
        self.tokens[token] = grant.subject
        self.exchanges.append((code, "ok"))
        return token, grant

    def subject_for(self, authorization: str) -> Any | None:
        if not authorization.startswith("Bearer "):
            return None
        return self.tokens.get(authorization[len("Bearer ") :])


def consent_page(provider: str, user_name: str, action: str, query: dict[str, str]) -> web.Response:
    """The provider's "Authorize?" page: a form that posts the same parameters back (a browser test clicks it)."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(key)}" value="{html.escape(value)}">' for key, value in query.items()
    )
    body = (
        f'<!doctype html><link rel="icon" href="data:,"><title>{provider}: authorize</title>'
        f"<h1>{html.escape(provider)}</h1>"
        f"<p>Signed in as <b>{html.escape(user_name)}</b>. Allow the application to know who you are?</p>"
        f'<form method="post" action="{html.escape(action)}">{hidden}'
        '<button name="decision" value="allow">Authorize</button>'
        '<button name="decision" value="deny">Cancel</button></form>'
    )
    return web.Response(text=body, content_type="text/html")


def redirect_back(redirect_uri: str, **params: str) -> web.HTTPFound:
    separator = "&" if "?" in redirect_uri else "?"
    return web.HTTPFound(redirect_uri + separator + urlencode(params))
