"""Platform-neutral text and buttons → Slack Block Kit.

A button's `action_id` is its `imagine:...` custom id, so a click carries everything needed to act on it, even
after a restart. Text is escaped for Slack (`&`, `<`, `>`), so a prompt cannot ping `<!channel>` or fake a link.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bots.buttons import Action, Button, Style

Block = dict[str, Any]

SECTION_TEXT_LIMIT = 3000  # Slack rejects longer section texts
MESSAGE_TEXT_LIMIT = 4000  # the notification fallback `text`; Slack truncates beyond 40k, keep it readable
BUTTON_LABEL_LIMIT = 75
DELETE_VALUE_SEPARATOR = "|"
DEFAULT_LABELS = {
    Action.UPSCALE: "U{index}",
    Action.VARIATION: "V{index}",
    Action.REROLL: "🔄",
    Action.CANCEL: "Cancel",
    Action.DELETE: "Delete",
    Action.APPROVE: "Approve",
    Action.REJECT: "Reject",
}
# Block Kit buttons have two styles besides the default.
SLACK_STYLES = {Style.PRIMARY: "primary", Style.SUCCESS: "primary", Style.DANGER: "danger"}


def escape(text: str) -> str:
    """Slack's three control characters; everything else (mrkdwn *bold*, _italics_) passes."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(text: str, mention: str | None = None) -> str:
    """Escaped text, optionally addressed to a user (`<@U123>` is the one piece of markup we add ourselves)."""
    return (f"<@{mention}> " if mention else "") + escape(text)


def fallback_text(text: str, mention: str | None = None) -> str:
    """The `text` argument: shown in notifications and by clients that cannot render blocks."""
    return _shorten(mrkdwn(text, mention), MESSAGE_TEXT_LIMIT)


def section(text: str, mention: str | None = None) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _shorten(mrkdwn(text, mention), SECTION_TEXT_LIMIT)}}


def button_element(button: Button) -> Block:
    label = button.label or DEFAULT_LABELS[button.action].format(index=button.index or "")
    element: Block = {
        "type": "button",
        "action_id": button.custom_id,
        "value": button.custom_id,
        "text": {"type": "plain_text", "text": _shorten(label, BUTTON_LABEL_LIMIT), "emoji": True},
    }
    if button.style in SLACK_STYLES:
        element["style"] = SLACK_STYLES[button.style]
    return element


def button_rows(rows: Sequence[Sequence[Button]]) -> list[Block]:
    return [
        {"type": "actions", "block_id": f"imagine-row-{number}", "elements": [button_element(b) for b in row]}
        for number, row in enumerate(rows, start=1)
        if row
    ]


def message_blocks(text: str, rows: Sequence[Sequence[Button]] = (), mention: str | None = None) -> list[Block]:
    return [section(text, mention), *button_rows(rows)]


def with_delete_value(message: list[Block], file_ids: str) -> list[Block]:
    """The Delete button's `value` names the job's uploaded files (`imagine:d:<job>|F1,F2`): a click carries what
    it takes to delete them, even after a restart (a value may hold 2000 characters)."""
    for block in message:
        for element in block.get("elements") or []:
            if str(element.get("action_id", "")).startswith(f"imagine:{Action.DELETE.value}:") and file_ids:
                element["value"] = f"{element['action_id']}{DELETE_VALUE_SEPARATOR}{file_ids}"
    return message


def delete_value_files(value: str) -> tuple[str, ...]:
    """The file ids a Delete button's value names (see `with_delete_value`)."""
    _, _, files = value.partition(DELETE_VALUE_SEPARATOR)
    return tuple(f for f in files.split(",") if f and f.isalnum())


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
