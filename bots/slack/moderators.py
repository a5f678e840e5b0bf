"""Who may decide on held prompts in Slack: the configured user ids, or members of the configured user group."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)
GROUP_CACHE_S = 60.0


class ModeratorCheck:
    """`await check(user_id)`. Group membership comes from `usergroups.users.list`, cached for a minute; when
    Slack cannot answer, the last known members are used, and with none known nobody passes (fail closed)."""

    def __init__(
        self,
        client: AsyncWebClient,
        user_ids: Iterable[str],
        usergroup_id: str = "",
        *,
        cache_s: float = GROUP_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._user_ids = frozenset(user_ids)
        self._usergroup_id = usergroup_id
        self._cache_s = cache_s
        self._clock = clock
        self._members: frozenset[str] | None = None
        self._fetched_at = 0.0

    async def __call__(self, user_id: str) -> bool:
        if user_id in self._user_ids:
            return True
        if not self._usergroup_id:
            return False
        return user_id in await self._group_members()

    async def _group_members(self) -> frozenset[str]:
        if self._members is not None and self._clock() - self._fetched_at < self._cache_s:
            return self._members
        try:
            response = await self._client.usergroups_users_list(usergroup=self._usergroup_id)
        except SlackApiError as error:
            log.warning(
                "could not list the moderator user group %s: %s", self._usergroup_id, error.response.get("error")
            )
            return self._members or frozenset()
        self._members = frozenset(str(user) for user in response.get("users") or ())
        self._fetched_at = self._clock()
        return self._members
