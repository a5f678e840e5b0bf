"""Word-boundary term matching per category, run on every normalised reading of a prompt.

A term matches only as a whole word or phrase ("cock" does not match "cocktail", "cunt" not "Scunthorpe"),
with an optional plural "s"/"es". Inside a phrase, words may be joined by spaces, hyphens, dots, underscores or
nothing ("self-harm", "self harm", "selfharm"). Allow-listed phrases ("pussy willow") are blanked out first.
A term ending in "*" is a stem: any word that starts with it matches ("nackt*": nackt, nackte, nackten), for
languages that inflect more than English. Terms in scripts written without spaces (Chinese, Japanese; also
Korean and Arabic, whose particles and articles attach to words) match anywhere, with no word boundary.
Terms are folded like the text (moderation.normalize.fold_term), so they may be written with accents. A term
starting with "=" must match with its accents, in the prompt as written ("=niña": not the name "Nina").

Words split by spaces or punctuation ("pe nis", "pe.nis", "na-ked") are read joined when the joined word is a
single-word term of a `joinable` category and no piece is a common word (so "the pen is red" stays apart).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from moderation.normalize import UNSPACED, UNSPACED_SCRIPTS, NormalizedText, fold_term
from moderation.policy import CategoryPolicy, ModerationPolicy

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty twenty-one twenty-two twenty-three twenty-four twenty-five "
    "twenty-six twenty-seven twenty-eight twenty-nine thirty"
).split()
WORD_JOINER = r"[\s\-_.]*"
LETTER = rf"[^\W_{UNSPACED_SCRIPTS}]"
"""A letter or digit of a spaced script: what must not touch a term for it to count as a whole word."""
STEM_TAIL = r"[^\W_]*"
FRAGMENT = re.compile(r"[^\W_]+")
MAX_JOINED_PIECES = 4


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
        self._categories = [(category.name, _category_regex(category, age)) for category in policy.categories]
        self._exact = [
            (category.name, regex)
            for category in policy.categories
            if (regex := _exact_regex(category.terms)) is not None
        ]
        regexes = dict(self._categories)
        self._masks = [
            (regex, phrase)
            for name, phrase in policy.normalize.embedding_masks.items()
            if (regex := regexes[name]) is not None
        ]
        joinable = set(policy.normalize.joinable)
        self._join_targets = frozenset(
            form
            for category in policy.categories
            if category.name in joinable
            for term in category.terms
            if " " not in term.strip() and not term.endswith("*") and not term.startswith("=")
            for form in fold_term(term)
            if form.isalpha() and len(form) >= 4
        )
        self._common = frozenset(word.casefold() for word in policy.normalize.common_words)

    def match(self, text: NormalizedText) -> TermHits:
        views = [self._blank_allowed(view) for view in (*text.views, *self._joined_pieces(text.views))]
        own_letters = self._blank_allowed(text.script) if text.script else ""
        hits: dict[str, tuple[str, ...]] = {}
        exact = dict(self._exact)
        for name, regex in self._categories:
            if regex is None and name not in exact:
                continue
            regex = regex or _NEVER
            found = {m.group(0).strip() for view in views for m in regex.finditer(view)}
            found |= {m.group(0).strip() for m in exact.get(name, _NEVER).finditer(text.native)}
            if found:
                # Moderators read the match as written ("голая"), not also its other readings ("rolaya").
                as_written = {m.group(0).strip() for m in regex.finditer(own_letters)}
                hits[name] = tuple(sorted(as_written or found))
        return TermHits(hits)

    def for_meaning(self, text: NormalizedText) -> str:
        """What a meaning model should read of a prompt not in English: its own letters, with allow-listed
        phrases taken out ("голыми стенами", bare walls, scored 0.61 as nudity) and names masked."""
        return " ".join(self.mask(self._blank_allowed(text.script)).split())

    def mask(self, view: str) -> str:
        """Replace matches of the masked categories (e.g. names of real people) by their generic phrase."""
        for regex, phrase in self._masks:
            view = regex.sub(phrase, view)
        return view

    def _joined_pieces(self, views: tuple[str, ...]) -> list[str]:
        """Readings where runs of pieces that spell a joinable term are written together."""
        found = []
        for view in views:
            pieces = [(m.start(), m.end(), m.group(0)) for m in FRAGMENT.finditer(view)]
            for size in range(2, MAX_JOINED_PIECES + 1):
                for index in range(len(pieces) - size + 1):
                    run = pieces[index : index + size]
                    word = "".join(piece for _, _, piece in run)
                    if word in self._join_targets and not any(p in self._common for _, _, p in run):
                        found.append(view[: run[0][0]] + word + view[run[-1][1] :])
        return list(dict.fromkeys(found))

    def _blank_allowed(self, view: str) -> str:
        if self._allow is None:
            return view
        return self._allow.sub(lambda m: " " * len(m.group(0)), view)


def _age_alternation(max_age: int) -> str:
    numbers = [str(n) for n in range(max_age, -1, -1)]
    words = [w for w in NUMBER_WORDS[: max_age + 1]]
    words.sort(key=len, reverse=True)
    return "(?<![0-9])(?:" + "|".join(numbers + [w.replace("-", WORD_JOINER) for w in words]) + ")(?![0-9])"


def _term_forms(term: str) -> list[tuple[str, str, str]]:
    """(kind, body, start) per folded form of a term: kind "word" (boundaries on both sides, optional plural),
    "stem" (boundary before, any ending) or "free" (a script without spaces: no boundaries)."""
    stem = term.strip().endswith("*")
    forms = []
    for form in fold_term(term.strip().rstrip("*")):
        words = form.replace("-", " ").split(" ")
        body = WORD_JOINER.join(re.escape(word) for word in words if word)
        if not body:
            continue
        if UNSPACED.match(form[0]) or UNSPACED.match(form[-1]):
            kind = "free"
        else:
            kind = "stem" if stem else "word"
        forms.append((kind, body, form[0]))
    return forms


def _phrase_regex(phrases: Iterable[str]) -> re.Pattern[str] | None:
    """One alternation per kind of boundary: a lookbehind inside every alternative made each verdict's term
    matching 30x slower (the engine tries every alternative at every position)."""
    by_kind: dict[str, set[str]] = {"word": set(), "stem": set(), "free": set()}
    for phrase in phrases:
        for kind, body, _ in _term_forms(phrase):
            by_kind[kind].add(body)
    shapes = {
        "word": rf"(?<!{LETTER})(?:{{}})(?:s|es)?(?!{LETTER})",
        "stem": rf"(?<!{LETTER})(?:{{}}){STEM_TAIL}",
        "free": "(?:{})",
    }
    parts = [
        shapes[kind].format("|".join(sorted(bodies, key=len, reverse=True)))
        for kind, bodies in by_kind.items()
        if bodies
    ]
    return re.compile("|".join(parts)) if parts else None


_NEVER = re.compile(r"(?!)")


def _exact_regex(terms: Iterable[str]) -> re.Pattern[str] | None:
    """The "=" terms of a category, as written (case folded), for the prompt as written."""
    bodies = sorted({re.escape(" ".join(t[1:].casefold().split())) for t in terms if t.startswith("=")}, key=len)
    if not bodies:
        return None
    return re.compile(rf"(?<!{LETTER})(?:{'|'.join(reversed(bodies))})(?:s|es)?(?!{LETTER})")


def _category_regex(category: CategoryPolicy, age: str) -> re.Pattern[str] | None:
    alternatives = []
    terms = _phrase_regex(t for t in category.terms if not t.startswith("="))
    if terms is not None:
        alternatives.append(terms.pattern)
    alternatives.extend(f"(?:{pattern.replace('{age}', age)})" for pattern in category.patterns)
    if not alternatives:
        return None
    return re.compile("|".join(alternatives))
