"""What a Slack user typed, as prompt and options: `/imagine a red fox --no blur --seed 42 --ar 16:9`.

Slack has no typed command options, so they follow the prompt as flags: `--no TEXT` (negative prompt), `--seed N`,
`--ar W:H` (or `--aspect`), `--strength X` (with a shared image: how much of it to redraw); a style preset is
`style:NAME` anywhere in the text (`/imagine a fox style:anime`). Slack's markup is undone first: mentions
(`<@U123>`) are dropped, links keep their label, and `&amp;`, `&lt;`, `&gt;` become the characters the user typed.
Ranges are checked by the conversation layer (engine rules); only what cannot even be read here (a seed that is not
a number) is refused here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bots.errors import BadOptions

MENTION = re.compile(r"<[@!][A-Za-z0-9^|]*(?:\|[^>]*)?>")
LINK = re.compile(r"<(?:#[A-Z0-9]+\|)?([^>|]*)(?:\|([^>]*))?>")
OPTION = re.compile(r"(?:^|\s)--(no|seed|ar|aspect|strength)(?=\s|$)", re.IGNORECASE)
ALIASES = {"aspect": "ar"}
STYLE = re.compile(r"(?:^|(?<=\s))style:(\S*)", re.IGNORECASE)


@dataclass(frozen=True)
class PromptText:
    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    aspect: str = "1:1"
    strength: float | None = None
    """With a shared image: how much of it to redraw (`--strength 0.5`); checked by the conversation layer."""
    style: str = ""


def plain_text(text: str) -> str:
    """Slack's message markup → what the user typed."""
    text = MENTION.sub(" ", text)
    text = LINK.sub(lambda m: m.group(2) or m.group(1), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


def parse_prompt_text(text: str) -> PromptText:
    style, text = _style(plain_text(text))
    parts = OPTION.split(text)
    prompt, options = parts[0].strip(), {}
    for name, value in zip(parts[1::2], parts[2::2], strict=True):
        name = ALIASES.get(name.lower(), name.lower())
        if name in options:
            raise BadOptions(f"--{name} is given twice")
        options[name] = value.strip()
    return PromptText(
        prompt=prompt,
        negative_prompt=options.get("no", ""),
        seed=_seed(options.get("seed")),
        aspect=options.get("ar") or "1:1",
        strength=_strength(options.get("strength")),
        style=style,
    )


def _style(text: str) -> tuple[str, str]:
    """`style:NAME` taken out of the text: (NAME, the rest)."""
    found = STYLE.findall(text)
    if len(found) > 1:
        raise BadOptions("style: is given twice")
    if found and not found[0]:
        raise BadOptions("style: needs a name, e.g. style:watercolour")
    return (found[0] if found else ""), " ".join(STYLE.sub(" ", text).split())


def _seed(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadOptions(f"--seed must be a whole number, got {value[:40]!r}") from None


def _strength(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise BadOptions(f"--strength must be a number from 0.1 to 1.0, got {value[:40]!r}") from None
