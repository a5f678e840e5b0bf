"""Word-boundary term matching per category, run on every normalised reading of a prompt.

A term matches only as a whole word or phrase ("cock" does not match "cocktail", "cunt" not "Scunthorpe"),
with an optional plural "s"/"es". Inside a phrase, words may be joined by spaces, hyphens, dots, underscores or
nothing ("self-harm", "self harm", "selfharm"). Allow-listed phrases ("pussy willow") are blanked out first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from moderation.normalize import NormalizedText
from moderation.policy import CategoryPolicy, ModerationPolicy

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty twenty-one twenty-two twenty-three twenty-four twenty-five "
    "twenty-six twenty-seven twenty-eight twenty-nine thirty"
).split()
WORD_JOINER = r"[\s\-_.]*"


@dataclass(frozen=True)
class TermHits:
    """Matched text per category, in policy order."""

    by_category: dict[str, tuple[str, ...]]

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(self.by_category)


class TermMatcher:
    def __init__(self, policy: ModerationPolicy) -> None:
        age = _age_alternation(policy.normalize.max_minor_age)
        self._allow = _phrase_regex(policy.normalize.allow_phrases)
        self._categories = [
            (category.name, _category_regex(category, age)) for category in policy.categories
        ]
        regexes = dict(self._categories)
        self._masks = [
            (regexes[name], phrase) for name, phrase in policy.normalize.embedding_masks.items() if regexes[name]
        ]

    def match(self, text: NormalizedText) -> TermHits:
        views = [self._blank_allowed(view) for view in text.views]
        hits: dict[str, tuple[str, ...]] = {}
        for name, regex in self._categories:
            if regex is None:
                continue
            found = {m.group(0).strip() for view in views for m in regex.finditer(view)}
            if found:
                hits[name] = tuple(sorted(found))
        return TermHits(hits)

    def mask(self, view: str) -> str:
        """Replace matches of the masked categories (e.g. names of real people) by their generic phrase."""
        for regex, phrase in self._masks:
            view = regex.sub(phrase, view)
        return view

    def _blank_allowed(self, view: str) -> str:
        if self._allow is None:
            return view
        return self._allow.sub(lambda m: " " * len(m.group(0)), view)


def _age_alternation(max_age: int) -> str:
    numbers = [str(n) for n in range(max_age, -1, -1)]
    words = [w for w in NUMBER_WORDS[: max_age + 1]]
    words.sort(key=len, reverse=True)
    return "(?<![0-9])(?:" + "|".join(numbers + [w.replace("-", WORD_JOINER) for w in words]) + ")(?![0-9])"


def _term_source(term: str) -> str:
    words = " ".join(term.casefold().split()).replace("-", " ").split(" ")
    return WORD_JOINER.join(re.escape(word) for word in words)


def _phrase_regex(phrases: Iterable[str]) -> re.Pattern[str] | None:
    sources = sorted({_term_source(p) for p in phrases}, key=len, reverse=True)
    if not sources:
        return None
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(sources) + r")(?:s|es)?(?![a-z0-9])")


def _category_regex(category: CategoryPolicy, age: str) -> re.Pattern[str] | None:
    alternatives = []
    terms = _phrase_regex(category.terms)
    if terms is not None:
        alternatives.append(terms.pattern)
    alternatives.extend(f"(?:{pattern.replace('{age}', age)})" for pattern in category.patterns)
    if not alternatives:
        return None
    return re.compile("|".join(alternatives))
