"""Sign in with Discord (OAuth2 authorization code, scope `identify`), and whether that user may moderate.

    sign_in = DiscordSignIn(settings.discord, http)               # http: the dashboard's aiohttp ClientSession
    url = sign_in.authorize_url(redirect_uri, state)             # send the browser there
    user = await sign_in.identify(code, redirect_uri)            # on the callback: code -> token -> /users/@me
    if await sign_in.is_moderator(user.id): ...

Discord only says who the user is. Whether they may moderate is the service's own rule, asked with the bot's
token: they hold one of `discord.moderator_role_ids` in a guild the bot is in (`discord.guild_ids`, or every guild
the bot sees), read from `GET /guilds/{guild}/members/{user}` — the same roles the chat buttons check.
Three plain HTTP calls on the aiohttp client the service already uses; the user's access token is used once and
dropped (nothing of it is stored in the session).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from config.settings import DiscordSettings

log = logging.getLogger(__name__)
SCOPE = "identify"


class SignInFailed(Exception):
    """The provider refused or could not be reached; the message is for logs, not for the browser."""


@dataclass(frozen=True)
class DiscordUser:
    id: str
    name: str


class DiscordSignIn:
    def __init__(self, config: DiscordSettings, http: aiohttp.ClientSession) -> None:
        self._config = config
        self._http = http
        self._api = config.api_base.rstrip("/")

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        query = {
            "response_type": "code",
            "client_id": self._config.client_id,
            "scope": SCOPE,
            "state": state,
            "redirect_uri": redirect_uri,
            "prompt": "none",  # returning moderators are not asked to consent again
        }
        return f"{self._config.oauth_authorize_url}?{urlencode(query)}"

    async def identify(self, code: str, redirect_uri: str) -> DiscordUser:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        client = aiohttp.encode_basic_auth(self._config.client_id, self._config.client_secret)
        token = await self._json("POST", "/oauth2/token", data=form, headers={"Authorization": client})
        access_token = token.get("access_token")
        if not isinstance(access_token, str) or str(token.get("token_type", "")).lower() != "bearer":
            raise SignInFailed("Discord's token response carried no bearer token")
        me = await self._json("GET", "/users/@me", headers={"Authorization": f"Bearer {access_token}"})
        user_id = str(me.get("id") or "")
        if not user_id.isdigit():
            raise SignInFailed("Discord's /users/@me answered without a user id")
        return DiscordUser(user_id, str(me.get("global_name") or me.get("username") or user_id))

    async def is_moderator(self, user_id: str) -> bool:
        roles = {str(role) for role in self._config.moderator_role_ids}
        if not roles:
            return False
        for guild_id in await self._guild_ids():
            member = await self._member(guild_id, user_id)
            if member is not None and roles & {str(role) for role in member.get("roles") or ()}:
                return True
        return False

    async def _guild_ids(self) -> list[str]:
        if self._config.guild_ids:
            return [str(guild) for guild in self._config.guild_ids]
        guilds = await self._bot_json("GET", "/users/@me/guilds")
        return [str(guild["id"]) for guild in guilds if isinstance(guild, dict) and "id" in guild]

    async def _member(self, guild_id: str, user_id: str) -> dict[str, Any] | None:
        """The member in that guild, or None when they are not in it (Discord: 404 Unknown Member)."""
        member = await self._json(
            "GET", f"/guilds/{guild_id}/members/{user_id}", headers=self._bot_headers(), missing=True
        )
        return member if isinstance(member, dict) else None

    def _bot_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bot {self._config.token}"}

    async def _bot_json(self, method: str, path: str) -> Any:
        return await self._json(method, path, headers=self._bot_headers())

    async def _json(self, method: str, path: str, *, missing: bool = False, **kwargs: Any) -> Any:
        """The JSON answer; with `missing`, None for a 404."""
        try:
            async with self._http.request(method, self._api + path, **kwargs) as response:
                if missing and response.status == 404:
                    return None
                return await _checked(response, f"{method} {path}")
        except aiohttp.ClientError as exc:
            raise SignInFailed(f"Discord could not be reached ({method} {path}): {exc.__class__.__name__}") from None


async def _checked(response: aiohttp.ClientResponse, what: str) -> Any:
    if response.status >= 400:
        error = ""
        if response.content_type == "application/json":
            body = await response.json()
            error = str(body.get("error") or body.get("message") or "") if isinstance(body, dict) else ""
        raise SignInFailed(f"Discord answered {what} with HTTP {response.status} {error}".rstrip())
    return await response.json(content_type=None)
