"""Sign in with Slack (OpenID Connect), and whether that user may moderate.

    sign_in = SlackSignIn(settings.slack)
    url = sign_in.authorize_url(redirect_uri, state, nonce)
    user = await sign_in.identify(code, redirect_uri)     # openid.connect.token, then openid.connect.userInfo
    if await sign_in.is_moderator(user.id): ...

Through slack_sdk's `AsyncWebClient` (the library the Slack adapter already uses), at `slack.api_base`. Identity
comes from `openid.connect.userInfo`, asked with the access token the code was exchanged for, over the same TLS
connection to Slack — so the id_token's signature need not be checked here. The user must belong to the
workspace the bot is installed in (`auth.test`'s team); whether they may moderate is the service's own rule, the
same `ModeratorCheck` the Slack buttons use: `slack.moderator_user_ids` or the `slack.moderator_usergroup_id`
group (`usergroups.users.list`, with the bot token).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlencode

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.moderators import ModeratorCheck
from bots.web.mod.oauth_discord import SignInFailed
from config.settings import SlackSettings

SCOPE = "openid profile"
USER_ID_CLAIM = "https://slack.com/user_id"
TEAM_ID_CLAIM = "https://slack.com/team_id"
SIGN_IN_HTTP_LOG = logging.getLogger(__name__ + ".http")
"""For the clients that carry a sign-in: slack_sdk logs each request's form and each response at debug level,
and these hold the authorization code, the client secret and the moderator's own token."""
SIGN_IN_HTTP_LOG.setLevel(logging.WARNING)


@dataclass(frozen=True)
class SlackUser:
    id: str
    name: str
    team_id: str


class SlackSignIn:
    def __init__(self, config: SlackSettings) -> None:
        self._config = config
        self._bot = AsyncWebClient(token=config.bot_token or None, base_url=config.api_base)
        self._is_moderator = ModeratorCheck(self._bot, config.moderator_user_ids, config.moderator_usergroup_id)
        self._team_id: str | None = None

    def authorize_url(self, redirect_uri: str, state: str, nonce: str) -> str:
        query = {
            "response_type": "code",
            "scope": SCOPE,
            "client_id": self._config.client_id,
            "state": state,
            "nonce": nonce,
            "redirect_uri": redirect_uri,
        }
        return f"{self._config.oidc_authorize_url}?{urlencode(query)}"

    async def identify(self, code: str, redirect_uri: str) -> SlackUser:
        try:
            # The client credentials in the form (client_secret_post): slack_sdk's openid_connect_token() sends them
            # with aiohttp's BasicAuth, deprecated since aiohttp 3.14; and no bot token goes with a user's sign-in.
            token = await AsyncWebClient(base_url=self._config.api_base, logger=SIGN_IN_HTTP_LOG).api_call(
                "openid.connect.token",
                data={
                    "client_id": self._config.client_id,
                    "client_secret": self._config.client_secret,
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "grant_type": "authorization_code",
                },
            )
            access_token = str(token.get("access_token") or "")
            user_client = AsyncWebClient(token=access_token, base_url=self._config.api_base, logger=SIGN_IN_HTTP_LOG)
            claims = await user_client.openid_connect_userInfo()
            team_id = await self._bot_team()
        except SlackApiError as exc:
            raise SignInFailed(f"Slack refused the sign-in: {exc.response.get('error')}") from None
        except SlackClientError as exc:
            raise SignInFailed(f"Slack could not be reached: {exc.__class__.__name__}") from None
        user_id = str(claims.get(USER_ID_CLAIM) or claims.get("sub") or "")
        if not user_id:
            raise SignInFailed("Slack's userInfo carried no user id")
        user = SlackUser(user_id, str(claims.get("name") or user_id), str(claims.get(TEAM_ID_CLAIM) or ""))
        if user.team_id != team_id:
            raise SignInFailed(f"{user.id} belongs to workspace {user.team_id!r}, not the bot's ({team_id!r})")
        return user

    async def is_moderator(self, user_id: str) -> bool:
        return await self._is_moderator(user_id)

    async def _bot_team(self) -> str:
        if self._team_id is None:
            self._team_id = str((await self._bot.auth_test()).get("team_id") or "")
        return self._team_id
