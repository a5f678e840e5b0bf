"""Text normalisation so that obfuscation does not help a bad prompt through.

`Normalizer(policy)(text)` returns several readings ("views") of a prompt; term matching runs on all of them
and a hit in any counts. Readings, in order:
  base     NFKC, invisible/format characters removed, homoglyphs mapped to Latin (Unicode's confusables data
           via `confusable_homoglyphs`), accents stripped, case folded, whitespace squeezed;
  camel    like base, but "NudeBeach" split into "nude beach" before folding;
  joined   spaced or dotted single letters re-joined ("n u d e", "n.u.d.e" -> "nude"; two or more spaces
           still separate words) and letters repeated three or more times collapsed ("seeex" -> "sex");
  leet     `joined` with leetspeak undone ("nud3" -> "nude") in tokens that mix letters with digits or
           symbols (pure numbers such as ages are left alone), once per reading of ambiguous characters;
  script   like base, without mapping homoglyphs: Cyrillic, Greek... stay in their own letters;
  latin    the prompt transliterated into Latin letters (`anyascii`: "голая" -> "golaya"), so that Russian
           typed in Latin letters meets the same lists; Han, kana, Hangul and Arabic letters are kept as they
           are (their transliterations run words together and would only hit by accident).
Every reading also has digits of any script as ASCII digits ("١٢" -> "12") and emoji skin tones removed.
Term lists are folded with `fold_term`, the same functions, so a term written with accents or in Cyrillic
meets the text in the same form.
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
SPACED_LETTERS = re.compile(rf"(?<![a-z0-9@$]){GLYPH}(?:[{SEPARATOR_CHARS}]+{GLYPH}(?![a-z0-9@$])){{2,}}")
WIDE_GAP = re.compile(r"\s{2,}")
SEPARATORS = re.compile(rf"[{SEPARATOR_CHARS}]+")
REPEATED_LETTER = re.compile(r"([a-z])\1{2,}")
CAMEL_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])")
TOKEN = re.compile(r"[a-z0-9@$!|+]+")
SKIN_TONES = frozenset(chr(code) for code in range(0x1F3FB, 0x1F400))
# Scripts written without spaces between words, or whose transliteration runs words together: kept as they are
# in the `latin` reading, and matched without word boundaries (moderation/terms.py).
UNSPACED_SCRIPTS = (
    "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"  # Hangul
    "\u0600-\u06ff\u0750-\u077f"  # Arabic
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana, Han
)
UNSPACED = re.compile(f"[{UNSPACED_SCRIPTS}]")


@dataclass(frozen=True)
class NormalizedText:
    original: str
    base: str
    views: tuple[str, ...]
    """All distinct readings, `base` first."""
    readable: str
    """The de-obfuscated reading closest to natural text (spaced letters joined): what the embedding sees."""
    native: str = ""
    """NFKC, invisible characters removed, case folded, in its own script: what the multilingual model sees."""
    latin: str = ""
    """The `latin` reading (transliterated into Latin letters), also one of `views`."""
    script: str = ""
    """The `script` reading: like `base` but in the prompt's own letters (no homoglyph mapping), also one of
    `views`; with allow-listed phrases blanked, what the multilingual model sees."""


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
        own_letters = _unify_characters(text, homoglyphs=False)
        latin = _fold(_join_spaced_letters(latin_letters(own_letters).casefold()))
        script = _fold(own_letters)
        views += [latin, script]
        native = _fold("".join(_visible(ch) for ch in unicodedata.normalize("NFKC", text)))
        return NormalizedText(
            original=text,
            base=base,
            views=tuple(dict.fromkeys(views)),
            readable=joined,
            native=native,
            latin=latin,
            script=script,
        )


def fold_term(term: str) -> tuple[str, ...]:
    """The forms a listed term takes in the readings: as `base` folds it, and transliterated like `latin`."""
    own_letters = _unify_characters(term, homoglyphs=False)
    return tuple(dict.fromkeys((_fold(_unify_characters(term)), _fold(latin_letters(own_letters)), _fold(own_letters))))


def latin_letters(text: str) -> str:
    """Transliterate into ASCII, except the scripts in UNSPACED_SCRIPTS; the apostrophes anyascii writes for
    soft and hard signs ("mal'chik") are dropped, as people typing Russian in Latin letters do."""
    from anyascii import anyascii

    return "".join(
        ch if ch.isascii() or UNSPACED.match(ch) else anyascii(ch).replace("'", "").replace("`", "") for ch in text
    )


def _unify_characters(text: str, homoglyphs: bool = True) -> str:
    """NFKC, drop invisible characters, map homoglyphs to Latin and strip accents (case kept)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(_visible(ch) for ch in text)
    text = text.translate(_digit_table(text))  # before homoglyphs: "١" would otherwise read as "l"
    if homoglyphs:
        text = text.translate(_homoglyph_table())
    text = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in text if unicodedata.category(ch) not in ("Mn", "Me"))


def _visible(ch: str) -> str:
    category = unicodedata.category(ch)
    if category == "Cf" or ch in INVISIBLE_LETTERS or ch in SKIN_TONES:
        return ""
    if category in ("Cc", "Zl", "Zp", "Zs"):
        return " "
    return ch


def _digit_table(text: str) -> dict[int, str]:
    """Decimal digits of any script (Arabic-Indic, Devanagari...) as ASCII digits."""
    return {ord(ch): str(unicodedata.digit(ch)) for ch in set(text) if not ch.isascii() and ch.isdecimal()}


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def homoglyph_table() -> dict[int, str]:
    """Non-ASCII characters confusable with an ASCII letter or digit -> that letter or digit."""
    return _homoglyph_table()


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
