"""Discord API v10 object payloads, shaped as the real API sends them, for the stand-in Discord server.

Only the fields discord.py 2.7 reads (and a few it tolerates) are filled in; ids are snowflake strings."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024

# Interaction types and callback types (https://discord.com/developers/docs/interactions/receiving-and-responding)
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, APPLICATION_COMMAND_AUTOCOMPLETE = 1, 2, 3, 4
CALLBACK_PONG, CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE, CALLBACK_DEFERRED_UPDATE, CALLBACK_UPDATE = 1, 4, 5, 6, 7
CALLBACK_AUTOCOMPLETE_RESULT = 8
# Permission bits (a member's `permissions`, a decimal string).
MEMBER_PERMISSIONS = 2248473465835073  # what an ordinary member of the stand-in guild holds (no Manage Server)
MANAGE_GUILD = 0x20
# Message flags.
FLAG_EPHEMERAL, FLAG_LOADING = 1 << 6, 1 << 7
# Channel types.
GUILD_TEXT, DM = 0, 1
# Interaction context types.
CONTEXT_GUILD, CONTEXT_BOT_DM, CONTEXT_PRIVATE_CHANNEL = 0, 1, 2


class SnowflakeFactory:
    """Increasing snowflakes whose timestamps are now, like Discord's."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((millis << 22) | (next(self._counter) & 0x3FFFFF))


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class User:
    id: str
    username: str
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.username,
            "avatar": None,
            "public_flags": 0,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass(frozen=True)
class Role:
    id: str
    name: str
    position: int = 1

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "color": 0,
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": "0",
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class Guild:
    id: str
    name: str
    channel_ids: list[str] = field(default_factory=list)
    roles: list[Role] = field(default_factory=list)

    def create_payload(self, bot: User) -> dict[str, Any]:
        """GUILD_CREATE: the guild with its channels, roles and the bot's own member."""
        everyone = Role(id=self.id, name="@everyone", position=0)
        return {
            "id": self.id,
            "name": self.name,
            "icon": None,
            "owner_id": "1",
            "unavailable": False,
            "large": False,
            "member_count": 2,
            "joined_at": now_iso(),
            "features": [],
            "premium_tier": 0,
            "system_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "preferred_locale": "en-US",
            "roles": [everyone.payload()] + [role.payload() for role in self.roles],
            "emojis": [],
            "stickers": [],
            "channels": [
                {
                    "id": channel_id,
                    "type": GUILD_TEXT,
                    "guild_id": self.id,
                    "name": f"channel-{index}",
                    "position": index,
                    "permission_overwrites": [],
                    "nsfw": False,
                    "parent_id": None,
                    "topic": None,
                    "last_message_id": None,
                    "rate_limit_per_user": 0,
                }
                for index, channel_id in enumerate(self.channel_ids)
            ],
            "threads": [],
            "members": [member_payload(bot, [])],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
        }


def member_payload(user: User, role_ids: list[str], permissions: int = MEMBER_PERMISSIONS) -> dict[str, Any]:
    return {
        "user": user.payload(),
        "nick": None,
        "avatar": None,
        "roles": list(role_ids),
        "joined_at": now_iso(),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "permissions": str(permissions),
    }


def guild_channel_payload(channel_id: str, guild_id: str) -> dict[str, Any]:
    return {
        "id": channel_id,
        "type": GUILD_TEXT,
        "guild_id": guild_id,
        "name": "imagine",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "permissions": "2248473465835073",
    }


def dm_channel_payload(channel_id: str, recipient: User) -> dict[str, Any]:
    return {"id": channel_id, "type": DM, "last_message_id": None, "recipients": [recipient.payload()], "flags": 0}


def message_payload(
    *,
    message_id: str,
    channel_id: str,
    author: User,
    content: str = "",
    guild_id: str | None = None,
    webhook_id: str | None = None,
    flags: int = 0,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": message_id,
        "type": 0,
        "channel_id": channel_id,
        "author": author.payload(),
        "content": content,
        "timestamp": now_iso(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": False,
        "flags": flags,
    }
    if guild_id is not None:
        data["guild_id"] = guild_id
    if webhook_id is not None:
        data["webhook_id"] = webhook_id
    return data


def interaction_payload(
    *,
    interaction_id: str,
    token: str,
    application_id: str,
    interaction_type: int,
    data: dict[str, Any],
    user: User,
    channel: dict[str, Any],
    guild_id: str | None,
    role_ids: list[str],
    message: dict[str, Any] | None = None,
    permissions: int = MEMBER_PERMISSIONS,
) -> dict[str, Any]:
    """An INTERACTION_CREATE payload: `member` in a guild (with its `permissions`), `user` in a DM."""
    payload: dict[str, Any] = {
        "id": interaction_id,
        "application_id": application_id,
        "type": interaction_type,
        "data": data,
        "token": token,
        "version": 1,
        "channel": channel,
        "channel_id": channel["id"],
        "locale": "en-US",
        "app_permissions": "2248473465835073",
        "entitlements": [],
        "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
    }
    if guild_id is not None:
        payload["guild_id"] = guild_id
        payload["guild_locale"] = "en-US"
        payload["guild"] = {"id": guild_id, "locale": "en-US", "features": []}
        payload["member"] = member_payload(user, role_ids, permissions)
        payload["authorizing_integration_owners"] = {"0": guild_id}
        payload["context"] = CONTEXT_GUILD
    else:
        payload["user"] = user.payload()
        payload["authorizing_integration_owners"] = {"1": user.id}
        payload["context"] = CONTEXT_BOT_DM
    if message is not None:
        payload["message"] = message
    return payload


STRING_OPTION, INTEGER_OPTION, NUMBER_OPTION, ATTACHMENT_OPTION = 3, 4, 10, 11


def command_options(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Slash command option values as the API sends them (3 = string, 4 = integer, 10 = number)."""
    return [{"name": name, "type": _option_type(value), "value": value} for name, value in values.items()]


def _option_type(value: Any) -> int:
    if isinstance(value, float):
        return NUMBER_OPTION
    return INTEGER_OPTION if isinstance(value, int) else STRING_OPTION


def attachment_payload(
    attachment_id: str, url: str, filename: str, size: int, content_type: str | None = "image/png"
) -> dict[str, Any]:
    """An attachment object, as in a message's `attachments` or an interaction's `data.resolved.attachments`."""
    data: dict[str, Any] = {
        "id": attachment_id,
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url.replace("cdn.", "media."),
    }
    if content_type is not None:
        data["content_type"] = content_type
    return data


def find_component(message: dict[str, Any], custom_id: str) -> dict[str, Any] | None:
    for row in message.get("components", []):
        for component in row.get("components", []):
            if component.get("custom_id") == custom_id:
                return component
    return None
