"""Per-server settings, made by a server's admins (Discord: Manage Server; Slack: workspace admins and owners).

An admin may restrict where the bot answers (allowed channels), pick a default style and a default strength for
image prompts, make moderation stricter,
tighten the limits (never beyond the global ones: a value above them is refused, and at use each is capped by
the global one, which may have been lowered since), and name the server's moderator role and review channel.
They are stored in `server_settings` (storage/tables.py), one JSON row per server, read on every command (so
a change holds from the next command, in every process), and every change is audited (moderation/audit.py) in
the same transaction.

    `/imagine-settings`                              the summary
    `/imagine-settings channels #art #bots`          (`all` lifts the restriction)
    `/imagine-settings style oil-painting`           (`none`)
    `/imagine-settings strength 0.4`                 (`default`: image_prompts.default_strength)
    `/imagine-settings moderation strict`            (`normal`)
    `/imagine-settings prompts-per-window 3`         (`default`; also burst, daily-quota, max-queued,
                                                      server-prompts-per-window)
    `/imagine-settings moderator-role @mods`         (a Slack user group; `none`)
    `/imagine-settings moderator-channel #mods`      (`none`)
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sqlalchemy import select

from bots import messages
from bots.conversation.styles import StyleBook
from bots.errors import BadOptions
from config.settings import LimitSettings
from engine.requests import MAX_IMAGE_STRENGTH, MIN_IMAGE_STRENGTH
from moderation.admission import ServerRules
from moderation.audit import insert_entry
from storage.database import Database
from storage.tables import server_settings

LIMIT_KEYS = {
    "burst": "burst",
    "prompts-per-window": "prompts_per_window",
    "server-prompts-per-window": "server_prompts_per_window",
    "daily-quota": "daily_quota",
    "max-queued": "max_queued_per_user",
}
"""Settings key → the `[limits]` key it tightens."""
KEYS = ("channels", "style", "strength", "moderation", *LIMIT_KEYS, "moderator-role", "moderator-channel")
CLEAR_WORDS = frozenset({"none", "default", "all", "any", "off", "-"})
MENTION = re.compile(r"<(?:#|@&|!subteam\^)([A-Za-z0-9]+)(?:\|[^>]*)?>")
"""A channel (Discord `<#1>`, Slack `<#C1|name>`), a Discord role `<@&1>` or a Slack user group `<!subteam^S1>`."""
PLAIN_ID = re.compile(r"^#?([A-Za-z0-9]{1,32})$")
ID_SHAPES = {"discord": re.compile(r"^\d{5,22}$"), "slack": re.compile(r"^[CGDS][A-Z0-9]{4,}$")}
"""What an id looks like on each platform (a Slack channel name like `general` is not an id: with "escape
channels" off, Slack sends names, which could never match a channel)."""
MAX_CHANNELS = 50


@dataclass(frozen=True)
class ServerSettings:
    allowed_channels: tuple[str, ...] = ()
    """Channel ids where the bot takes prompts; empty: everywhere."""
    default_style: str = ""
    strict_moderation: bool = False
    limits: dict[str, int] = field(default_factory=dict)
    """`[limits]` keys → the server's own (tighter) value."""
    moderator_role: str = ""
    """A Discord role id or a Slack user group id whose members moderate this server."""
    moderator_channel: str = ""
    """Where this server's held prompts go (instead of the global moderators' channel)."""
    default_strength: float | None = None
    """An image prompt's strength when the command names none; None: `image_prompts.default_strength`."""

    def allows_channel(self, channel_id: str) -> bool:
        return not self.allowed_channels or channel_id in self.allowed_channels

    def rules(self, global_limits: LimitSettings) -> ServerRules:
        """What admission applies for this server: each own limit capped by the global one."""
        if not self.limits:
            return ServerRules(strict=self.strict_moderation)
        tighter = {key: min(value, getattr(global_limits, key)) for key, value in self.limits.items()}
        return ServerRules(strict=self.strict_moderation, limits=replace(global_limits, **tighter))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {key: value for key, value in data.items() if key in known}
        values["allowed_channels"] = tuple(values.get("allowed_channels") or ())
        values["limits"] = {str(k): int(v) for k, v in (values.get("limits") or {}).items()}
        strength = values.get("default_strength")
        values["default_strength"] = None if strength is None else float(strength)
        return cls(**values)


def parse_change(
    current: ServerSettings, key: str, value: str, styles: StyleBook, limits: LimitSettings, platform: str = ""
) -> ServerSettings:
    """The settings after `key value`; BadOptions with a message for the admin when it cannot be done."""
    key = key.strip().lower()
    value = value.strip()
    clear = value.lower() in CLEAR_WORDS
    if key not in KEYS:
        raise BadOptions(messages.settings_unknown_key(key, KEYS))
    if not value:
        raise BadOptions(messages.settings_value_needed(key))
    if key == "channels":
        return replace(current, allowed_channels=() if clear else _ids(value, MAX_CHANNELS, platform))
    if key == "style":
        return replace(current, default_style="" if clear else _style(value, styles))
    if key == "strength":
        return replace(current, default_strength=None if clear else _strength(value))
    if key == "moderation":
        return replace(current, strict_moderation=_strictness(value))
    if key in LIMIT_KEYS:
        return replace(current, limits=_limit(current.limits, LIMIT_KEYS[key], key, value, clear, limits))
    one = "" if clear else _ids(value, 1, platform)[0]
    if key == "moderator-role":
        return replace(current, moderator_role=one)
    return replace(current, moderator_channel=one)


def _ids(value: str, most: int, platform: str) -> tuple[str, ...]:
    found: list[str] = []
    shape = ID_SHAPES.get(platform)
    for word in MENTION.sub(lambda m: f" {m.group(1)} ", value).replace(",", " ").split():
        match = PLAIN_ID.match(word)
        if match is None or (shape is not None and not shape.match(match.group(1))):
            raise BadOptions(messages.settings_bad_id(word))
        found.append(match.group(1))
    if not found or len(found) > most:
        raise BadOptions(messages.settings_id_count(most))
    return tuple(dict.fromkeys(found))


def _style(value: str, styles: StyleBook) -> str:
    name = styles.find(value)
    if name is None:
        raise BadOptions(messages.unknown_style(value, styles.names))
    return name


def _strength(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise BadOptions(messages.SETTINGS_STRENGTH) from None
    if not MIN_IMAGE_STRENGTH <= number <= MAX_IMAGE_STRENGTH:  # NaN fails this too
        raise BadOptions(messages.SETTINGS_STRENGTH)
    return round(number, 2)


def _strictness(value: str) -> bool:
    word = value.lower()
    if word in ("strict", "on", "true", "yes"):
        return True
    if word in ("normal", "off", "false", "no", "default"):
        return False
    raise BadOptions(messages.SETTINGS_STRICTNESS)


def _limit(
    current: dict[str, int], name: str, key: str, value: str, clear: bool, limits: LimitSettings
) -> dict[str, int]:
    own = dict(current)
    if clear:
        own.pop(name, None)
        return own
    ceiling = int(getattr(limits, name))
    try:
        number = int(value)
    except ValueError:
        raise BadOptions(messages.settings_limit_range(key, ceiling)) from None
    if not 1 <= number <= ceiling:
        raise BadOptions(messages.settings_limit_range(key, ceiling))
    own[name] = number
    return own


class ServerSettingsStore:
    """Reads and writes `server_settings`; a write and its audit entry commit together."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def get(self, platform: str, server_id: str) -> ServerSettings:
        if not server_id:
            return ServerSettings()
        query = select(server_settings.c.settings_json).where(
            server_settings.c.platform == platform, server_settings.c.server_id == server_id
        )
        async with self._database.read() as db:
            row = (await db.execute(query)).first()
        return ServerSettings.from_json(row.settings_json) if row else ServerSettings()

    async def put(self, platform: str, server_id: str, settings: ServerSettings, actor: str, detail: str) -> None:
        now = time.time()
        values = {"settings_json": settings.to_json(), "updated_at": now, "updated_by": actor}
        insert = self._database.insert(server_settings).values(platform=platform, server_id=server_id, **values)
        upsert = insert.on_conflict_do_update(
            index_elements=[server_settings.c.platform, server_settings.c.server_id], set_=values
        )
        async with self._database.write() as db:
            await db.execute(upsert)
            await insert_entry(db, time.time, actor, "server_settings", f"server:{platform}:{server_id}", "ok", detail)
