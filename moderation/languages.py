"""Which language a prompt is in: by script first, then, for Latin letters, by the common words of each language.

    identify = LanguageIdentifier(policy.languages)
    identify(normalized_text)  ->  "ru"    (a code of `[languages.X]` in config/moderation.toml, or "en")

Chat prompts are short ("голая женщина", "eine nackte Frau am Strand"), which statistical detectors get wrong
often; a handful of function words and letters per language decides them well, costs microseconds and has no
model to load. Scripts decide first: Hangul is Korean, kana Japanese, other Han Chinese, Arabic letters Arabic,
Cyrillic Russian. Latin-letter prompts score one point per common word of a language (the policy's `hints`,
matched on the Latin reading, so Russian typed in Latin letters counts as Russian) and per letter only that
language uses (ñ, ß, ł, ğ...); English wins ties, and a prompt with no clue is English.

The language decides two things only: which model judges the meaning (moderation/prompts.py) and the language of
the refusal (moderation/messages.py). Term lists of every language are matched on every prompt, whatever it is.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from moderation.normalize import NormalizedText, fold_term, homoglyph_table
from moderation.policy import LanguagePolicy

ENGLISH = "en"
SCRIPTS = (  # (code, pattern of the script's letters); order settles ties: kana beside Han is Japanese
    ("ko", re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")),
    ("ja", re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")),
    ("zh", re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")),
    ("ar", re.compile(r"[\u0600-\u06ff\u0750-\u077f]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
)
LATIN_LETTER = re.compile(r"[a-zà-ÿā-ž]")
# Letters that belong to one language among those moderated (accents several share, like é, say nothing).
MARK_LETTERS = {
    "es": "ñ¿¡",
    "pt": "ãõ",
    "fr": "œùûëïÿ",
    "de": "ßä",
    "pl": "łąęśźżńć",
    "tr": "ığşİ",
    "it": "ìò",
}
WORD = re.compile(r"[^\W\d_]+")
FRENCH_ELISION = re.compile(r"(?<![^\W\d_])(?:l|d|qu|j|n|c)['’][^\W\d_]")
SCRIPT_SHARE = 0.25
"""A non-Latin script with at least this share of the letters decides ("a 裸体 woman" is Chinese): the words
in it are the ones the English lists and model cannot read."""


class LanguageIdentifier:
    def __init__(self, languages: Sequence[LanguagePolicy]) -> None:
        # Folded like the readings they are looked up in ("niña" -> "nina"), in their own letters: the Latin
        # reading of Cyrillic "с" is "c", which is no clue. One-letter words are not clues either: they are
        # mostly obfuscation ("c h i l d") or shared ("a", "e", "y").
        self._hints = {
            language.code: frozenset(fold_term(hint)[-1] for hint in language.hints if len(hint) > 1)
            for language in languages
        }
        self.names = {ENGLISH: "English", **{language.code: language.name for language in languages}}

    def __call__(self, text: NormalizedText) -> str:
        script = self._by_script(text.native)
        if script is not None:
            return script
        return self._by_words(text)

    def foreign_letters(self, text: NormalizedText) -> bool:
        """Any letter of a non-Latin script: a prompt the English model cannot fully read."""
        return any(pattern.search(text.native) for _, pattern in SCRIPTS)

    def _by_script(self, native: str) -> str | None:
        # Letters that look like Latin ones ("ѕеху tееn") are obfuscation, not Russian: they do not count.
        native = native.translate(homoglyph_table())
        counts = Counter({code: len(pattern.findall(native)) for code, pattern in SCRIPTS})
        if counts["ja"]:  # kanji are Han letters: kana beside them make the text Japanese
            counts["ja"] += counts.pop("zh")
        latin = len(LATIN_LETTER.findall(native))
        code, count = max(counts.items(), key=lambda item: item[1])
        if count and count >= SCRIPT_SHARE * (count + latin):
            return code
        return None

    def _by_words(self, text: NormalizedText) -> str:
        words = set(WORD.findall(text.latin)) | set(WORD.findall(text.script))  # "golaya" counts for Russian
        scores: Counter[str] = Counter()
        for code, hints in self._hints.items():
            scores[code] = sum(word in hints for word in words)
        scores["fr"] += len(FRENCH_ELISION.findall(text.native))
        for code, letters in MARK_LETTERS.items():
            scores[code] += sum(letter in text.native for letter in letters)
        if not scores:
            return ENGLISH
        code, best = max(scores.items(), key=lambda item: (item[1], item[0] == ENGLISH))
        if best == 0 or scores.get(ENGLISH, 0) >= best:
            return ENGLISH
        return code
