"""What every dashboard handler reaches through `request.app[DASHBOARD]`: the service's parts (looked up when a
request comes, since the web server starts before the database and admission do), the sign-in providers, the
local accounts and the sign-in throttle."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from bots.web.mod.local_accounts import LocalAccounts
from bots.web.mod.throttle import SignInThrottle
from config.settings import Settings
from moderation.audit import AuditLog

if TYPE_CHECKING:
    from bots.conversation import Conversation
    from bots.web.mod.oauth_discord import DiscordSignIn
    from bots.web.mod.oauth_slack import SlackSignIn
    from engine.api import JobQueue
    from moderation.admission import Admission
    from storage.database import Database


class Backend(Protocol):
    """What the dashboard needs of the running service (`bots.service.Service` is one)."""

    settings: Settings
    database: Database
    admission: Admission | None
    conversation: Conversation | None

    @property
    def engine(self) -> JobQueue: ...


class NotReady(web.HTTPServiceUnavailable):
    """The service is still starting (or stopping): no admission or conversation to act through."""

    def __init__(self) -> None:
        super().__init__(text="The service is starting; try again in a moment.")


@dataclass
class Dashboard:
    backend: Backend
    accounts: LocalAccounts
    throttle: SignInThrottle
    discord: DiscordSignIn | None = None
    slack: SlackSignIn | None = None
    clock: Callable[[], float] = field(default=time.time)

    @property
    def settings(self) -> Settings:
        return self.backend.settings

    def admission(self) -> Admission:
        admission = self.backend.admission
        if admission is None or not self.backend.database.is_open:
            raise NotReady()
        return admission

    def conversation(self) -> Conversation:
        conversation = self.backend.conversation
        if conversation is None:
            raise NotReady()
        return conversation

    def audit(self) -> AuditLog:
        return self.admission().audit


DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard", Dashboard)
