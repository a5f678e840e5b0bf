"""Platform-neutral buttons. A button's id carries everything needed to act on it, so buttons keep working
after a restart: `imagine:<action>:<target>[:<index>]`, at most 100 characters (Discord's custom_id limit)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bots.errors import BadButton

PREFIX = "imagine"


class Action(enum.StrEnum):
    UPSCALE = "u"
    VARIATION = "v"
    REROLL = "r"
    CANCEL = "c"
    DELETE = "d"
    APPROVE = "approve"
    REJECT = "reject"


class Style(enum.StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    SUCCESS = "success"
    DANGER = "danger"


@dataclass(frozen=True)
class Button:
    action: Action
    target: str
    """A job id (U/V/R/C/D) or a review item id (approve/reject)."""
    index: int | None = None
    label: str = ""
    style: Style = Style.SECONDARY

    @property
    def custom_id(self) -> str:
        parts = [PREFIX, self.action.value, self.target]
        if self.index is not None:
            parts.append(str(self.index))
        return ":".join(parts)


def parse_button(custom_id: str) -> Button:
    parts = custom_id.split(":")
    if len(parts) not in (3, 4) or parts[0] != PREFIX:
        raise BadButton(f"not an imagine button: {custom_id[:100]!r}")
    try:
        action = Action(parts[1])
        index = int(parts[3]) if len(parts) == 4 else None
    except ValueError:
        raise BadButton(f"malformed imagine button: {custom_id[:100]!r}") from None
    if not parts[2] or not parts[2].replace("-", "").isalnum():
        raise BadButton(f"malformed imagine button target: {custom_id[:100]!r}")
    return Button(action=action, target=parts[2], index=index)
