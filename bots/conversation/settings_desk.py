"""`/imagine-settings`: a server admin's view and changes of their server's settings (bots/conversation/servers.py).

The adapter says whether the requester is an admin (it asks its platform); this desk refuses everyone else
(audited), applies one `key value` change, and answers with the summary. Platform-neutral: the web can use it."""

from __future__ import annotations

import logging

from bots import messages
from bots.conversation.servers import KEYS, LIMIT_KEYS, ServerSettings, ServerSettingsStore, parse_change
from bots.conversation.styles import StyleBook
from bots.errors import BadOptions
from config.settings import LimitSettings
from engine.requests import Requester
from moderation.audit import AuditLog

log = logging.getLogger(__name__)
MAX_VALUE_CHARS = 500


class SettingsDesk:
    def __init__(
        self,
        store: ServerSettingsStore,
        styles: StyleBook,
        limits: LimitSettings,
        audit: AuditLog,
        default_strength: float,
    ) -> None:
        self._store = store
        self._default_strength = default_strength
        self._styles = styles
        self._limits = limits
        self._audit = audit

    async def answer(self, requester: Requester, is_admin: bool, key: str = "", value: str = "") -> str:
        """The reply to `/imagine-settings [key value]` (meant for the requester alone)."""
        if not requester.server_id:
            return messages.SETTINGS_NEED_A_SERVER
        target = f"server:{requester.platform}:{requester.server_id}"
        if not is_admin:
            log.warning("%s, not an admin, tried to change the settings of %s", requester.key, target)
            await self._audit.record_refused(requester.key, "server_settings", target, "not an admin")
            return messages.NOT_AN_ADMIN
        current = await self._store.get(requester.platform, requester.server_id)
        if not key.strip():
            return messages.settings_summary(requester.server_id, self.summary(current))
        try:
            changed = parse_change(
                current, key, value[:MAX_VALUE_CHARS], self._styles, self._limits, requester.platform
            )
        except BadOptions as error:
            return messages.invalid_request(str(error))
        detail = f"{key.strip().lower()} = {value.strip()[:200]}"
        await self._store.put(requester.platform, requester.server_id, changed, requester.key, detail)
        log.info("%s changed the settings of %s: %s", requester.key, target, detail)
        return messages.settings_summary(requester.server_id, self.summary(changed), f"Changed {detail}.")

    def summary(self, settings: ServerSettings) -> list[str]:
        channels = ", ".join(settings.allowed_channels) or "all"
        lines = [
            f"channels: {channels}",
            f"style: {settings.default_style or 'none'}",
            f"strength: {settings.default_strength:g}"
            if settings.default_strength is not None
            else f"strength: global {self._default_strength:g}",
            f"moderation: {'strict' if settings.strict_moderation else 'normal'}",
        ]
        for key, name in LIMIT_KEYS.items():
            ceiling = getattr(self._limits, name)
            own = settings.limits.get(name)
            lines.append(f"{key}: {min(own, ceiling)} (global {ceiling})" if own else f"{key}: global {ceiling}")
        lines.append(f"moderator-role: {settings.moderator_role or 'none'}")
        lines.append(f"moderator-channel: {settings.moderator_channel or 'the global one'}")
        lines.append(f"change one with: /imagine-settings KEY VALUE (keys: {', '.join(KEYS)})")
        return lines
