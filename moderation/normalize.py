"""Text normalisation so that obfuscation does not help a bad prompt through.

`Normalizer(policy)(text)` returns several readings ("views") of a prompt; term matching runs on all of them
and a hit in any counts. Readings, in order:
  base     NFKC, invisible/format characters removed, homoglyphs mapped to Latin (Unicode's confusables data
           via `confusable_homoglyphs`), accents stripped, case folded, whitespace squeezed;
  camel    like base, but "NudeBeach" split into "nude beach" before folding;
  joined   spaced or dotted single letters re-joined ("n u d e", "n.u.d.e" -> "nude"; two or more spaces
           still separate words) and letters repeated three or more times collapsed ("seeex" -> "sex");
  leet     `joined` with leetspeak undone ("nud3" -> "nude") in tokens that mix letters with digits or
           symbols (pure numbers such as ages are left alone), once per reading of ambiguous characters.
Extra readings only add hits: an innocent word can only be flagged if one of its readings is a listed term.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from moderation.policy import NormalizePolicy

# Letters that render as nothing and are not Unicode "format" characters (Hangul fillers, braille blank).
INVISIBLE_LETTERS = "\u115f\u1160\u3164\uffa0\u2800"
SEPARATOR_CHARS = r"\s.\-_*·•,/\\~+:;'\"`^=()\[\]{}<>"
GLYPH = r"[a-z0-9@$!|]"
# Three or more single glyphs separated by separators: "n u d e", "n.u.d.e", "s-3-x".
SPACED_LETTERS = re.compile(
    rf"(?<![a-z0-9@$]){GLYPH}(?:[{SEPARATOR_CHARS}]+{GLYPH}(?![a-z0-9@$])){{2,}}"
)
WIDE_GAP = re.compile(r"\s{2,}")
SEPARATORS = re.compile(rf"[{SEPARATOR_CHARS}]+")
REPEATED_LETTER = re.compile(r"([a-z])\1{2,}")
CAMEL_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])")
TOKEN = re.compile(r"[a-z0-9@$!|+]+")


@dataclass(frozen=True)
class NormalizedText:
    original: str
    base: str
    views: tuple[str, ...]
    """All distinct readings, `base` first."""
    readable: str
    """The de-obfuscated reading closest to natural text (spaced letters joined): what the embedding sees."""


class Normalizer:
    def __init__(self, policy: NormalizePolicy) -> None:
        self._leet_readings = _leet_readings(policy.leet, policy.leet_alternatives)

    def __call__(self, text: str) -> NormalizedText:
        cased = _unify_characters(text)
        base = _fold(cased)
        camel = _fold(CAMEL_BOUNDARY.sub(" ", cased))
        joined = _fold(_join_spaced_letters(cased.casefold()))  # before squeezing: wide gaps split words
        views = [base, camel, joined]
        views.extend(_undo_leet(joined, table) for table in self._leet_readings)
        return NormalizedText(original=text, base=base, views=tuple(dict.fromkeys(views)), readable=joined)


def _unify_characters(text: str) -> str:
    """NFKC, drop invisible characters, map homoglyphs to Latin and strip accents (case kept)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(_visible(ch) for ch in text)
    text = text.translate(_homoglyph_table())
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if unicodedata.category(ch) not in ("Mn", "Me"))


def _visible(ch: str) -> str:
    category = unicodedata.category(ch)
    if category == "Cf" or ch in INVISIBLE_LETTERS:
        return ""
    if category in ("Cc", "Zl", "Zp", "Zs"):
        return " "
    return ch


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


@functools.cache
def _homoglyph_table() -> dict[int, str]:
    """Map every non-ASCII character that Unicode lists as confusable with an ASCII letter or digit to it."""
    from confusable_homoglyphs.confusables import confusables_data

    table: dict[int, str] = {}
    for character, homoglyphs in confusables_data.items():
        if len(character) != 1 or character.isascii():
            continue
        targets = [h["c"] for h in homoglyphs if len(h["c"]) == 1 and h["c"].isascii() and h["c"].isalnum()]
        if targets:
            table[ord(character)] = targets[0]
    return table


def _join_spaced_letters(text: str) -> str:
    def join(match: re.Match[str]) -> str:
        words = WIDE_GAP.split(match.group(0))
        return " ".join(SEPARATORS.sub("", word) for word in words)

    return REPEATED_LETTER.sub(r"\1", SPACED_LETTERS.sub(join, text))


def _leet_readings(leet: Mapping[str, str], alternatives: Mapping[str, str]) -> tuple[dict[str, str], ...]:
    primary = dict(leet)
    if not alternatives:
        return (primary,)
    return primary, {**primary, **alternatives}


def _undo_leet(text: str, table: Mapping[str, str]) -> str:
    def undo(match: re.Match[str]) -> str:
        token = match.group(0)
        has_letter = any("a" <= ch <= "z" for ch in token)
        if not has_letter or not any(ch in table for ch in token):
            return token
        return "".join(table.get(ch, ch) for ch in token)

    return TOKEN.sub(undo, text)
