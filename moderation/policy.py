"""The moderation policy as data: term lists, combination rules, semantic exemplars and image classes.

Loaded from `config/moderation.toml` (shipped beside default.toml) or the file named by the setting
`moderation.policy_file`. Everything is checked on load; a bad file raises `config.settings.ConfigError`
naming the key, so a typo never silently weakens moderation.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from config.settings import DEFAULT_FILE, ConfigError
from moderation.verdict import Action

DEFAULT_POLICY_FILE = DEFAULT_FILE.with_name("moderation.toml")
SEMANTIC_PREFIX = "semantic:"


@dataclass(frozen=True)
class CategoryPolicy:
    """A term list. `action` is what a hit does on its own; `allow` makes the category a cue for rules only."""

    name: str
    action: Action
    user_reason: str
    description: str
    terms: tuple[str, ...]
    patterns: tuple[str, ...] = ()
    """Regular expressions matched against the normalised text; `{age}` stands for any age under 18."""
    ban: bool = False
    """A hit bans the requester at once, pending a moderator's review."""


@dataclass(frozen=True)
class RulePolicy:
    """Fires when every group in `requires` has at least one hit (a category or a `semantic:` cue)."""

    name: str
    requires: tuple[frozenset[str], ...]
    action: Action
    user_reason: str
    description: str
    ban: bool = False


@dataclass(frozen=True)
class SemanticCategory:
    """Prompts whose meaning is close to `exemplars` (max cosine similarity) are held or used as cues."""

    name: str
    exemplars: tuple[str, ...]
    review_threshold: float
    """At or above: the prompt is held for review on meaning alone."""
    cue_threshold: float
    """At or above: `semantic:<name>` counts as a cue for combination rules."""
    user_reason: str
    description: str
    multilingual_exemplars: tuple[str, ...] = ()
    """Extra exemplars for the multilingual model only (it also sees `exemplars`)."""
    multilingual_review_threshold: float | None = None
    """Like the thresholds above, for prompts not in English, scored by the multilingual model (whose
    similarities run on another scale); None: the category is not judged in other languages by meaning."""
    multilingual_cue_threshold: float | None = None


@dataclass(frozen=True)
class LanguagePolicy:
    """One language's share of the policy: its term lists (merged into the categories of the same name),
    innocent phrases, and the common words that identify it (moderation/languages.py)."""

    code: str
    name: str
    hints: tuple[str, ...]
    terms: Mapping[str, tuple[str, ...]]
    patterns: Mapping[str, tuple[str, ...]]
    allow_phrases: tuple[str, ...]


@dataclass(frozen=True)
class NormalizePolicy:
    leet: Mapping[str, str]
    leet_alternatives: Mapping[str, str]
    """A second reading for ambiguous characters ("1" is "i" in one reading, "l" in the other)."""
    allow_phrases: tuple[str, ...]
    """Innocent phrases that contain a listed word ("pussy willow"); blanked out before term matching."""
    max_minor_age: int
    embedding_masks: Mapping[str, str] = field(default_factory=dict)
    """Category -> phrase that replaces its matches in the text the embedding model sees: names carry so much
    weight that "Taylor Swift pleasuring herself" scores far lower than "a person pleasuring herself"."""
    joinable: tuple[str, ...] = ()
    """Categories whose single-word terms are also found split into pieces ("pe nis")."""
    common_words: tuple[str, ...] = ()
    """Words that are never taken as a piece of a split term ("the pen is red" is not "penis")."""


@dataclass(frozen=True)
class ImagePolicy:
    classes: tuple[str, ...]
    threshold: float


@dataclass(frozen=True)
class ModerationPolicy:
    normalize: NormalizePolicy
    categories: tuple[CategoryPolicy, ...]
    rules: tuple[RulePolicy, ...]
    semantic: tuple[SemanticCategory, ...]
    image: ImagePolicy
    source: str = ""
    languages: tuple[LanguagePolicy, ...] = ()

    @classmethod
    def load(cls, path: str | Path | None = None) -> ModerationPolicy:
        """Read and check a policy file; `None` or "" reads the packaged default."""
        file = Path(path).expanduser() if path else DEFAULT_POLICY_FILE
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"moderation policy file not found: {file} (setting moderation.policy_file)") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"moderation policy file {file} is not valid TOML: {exc}") from None
        return _parse(data, str(file))


def _parse(data: Mapping[str, Any], source: str) -> ModerationPolicy:
    reader = _Reader(source)
    normalize = _parse_normalize(reader, _table(reader, data, "normalize"))
    categories = tuple(
        _parse_category(reader, name, table) for name, table in _table(reader, data, "categories").items()
    )
    known_cues = {category.name for category in categories}
    languages = tuple(
        _parse_language(reader, code, table, known_cues)
        for code, table in _table(reader, data, "languages", required=False).items()
    )
    categories = tuple(_with_languages(category, languages) for category in categories)
    allow = normalize.allow_phrases + tuple(p for language in languages for p in language.allow_phrases)
    normalize = replace(normalize, allow_phrases=allow)
    unknown_joinable = [name for name in normalize.joinable if name not in known_cues]
    if unknown_joinable:
        raise reader.fail("normalize.joinable", f"unknown categor(ies) {', '.join(unknown_joinable)}")
    unknown_masks = [name for name in normalize.embedding_masks if name not in known_cues]
    if unknown_masks:
        raise reader.fail("normalize.embedding_masks", f"unknown categor(ies) {', '.join(unknown_masks)}")
    semantic = tuple(
        _parse_semantic(reader, name, table) for name, table in _table(reader, data, "semantic", required=False).items()
    )
    known_cues |= {SEMANTIC_PREFIX + item.name for item in semantic}
    rules = tuple(
        _parse_rule(reader, index, table, known_cues)
        for index, table in enumerate(reader.get(data, "rules", list, default=[]))
    )
    image = _parse_image(reader, _table(reader, data, "image"))
    policy = ModerationPolicy(normalize, categories, rules, semantic, image, source, languages)
    _check_patterns(reader, policy)
    return policy


class _Reader:
    """Typed access to the TOML tables with errors that name the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"moderation policy {self.source}: {key}: {problem}")

    def get(self, table: Mapping[str, Any], key: str, kind: type, *, default: Any = ..., where: str = "") -> Any:
        name = f"{where}.{key}" if where else key
        if key not in table:
            if default is ...:
                raise self.fail(name, "missing")
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.fail(name, f"expected {kind.__name__}, got {value!r}")
        return value

    def strings(self, table: Mapping[str, Any], key: str, *, where: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(table, key, list, default=default, where=where)
        for value in values:
            if not isinstance(value, str) or not value.strip():
                raise self.fail(f"{where}.{key}", f"expected non-empty strings, got {value!r}")
        return tuple(values)

    def action(self, table: Mapping[str, Any], where: str) -> Action:
        value = self.get(table, "action", str, where=where)
        try:
            return Action(value)
        except ValueError:
            raise self.fail(f"{where}.action", f"expected allow, review or block, got {value!r}") from None

    def fraction(self, table: Mapping[str, Any], key: str, where: str) -> float:
        value = self.get(table, key, float, where=where)
        if not 0.0 <= value <= 1.0:
            raise self.fail(f"{where}.{key}", f"must be between 0 and 1, got {value}")
        return value


def _table(reader: _Reader, data: Mapping[str, Any], key: str, required: bool = True) -> Mapping[str, Any]:
    return reader.get(data, key, dict, default=... if required else {})


def _parse_normalize(reader: _Reader, table: Mapping[str, Any]) -> NormalizePolicy:
    where = "normalize"
    leet = reader.get(table, "leet", dict, where=where)
    alternatives = reader.get(table, "leet_alternatives", dict, default={}, where=where)
    for key, mapping in (("leet", leet), ("leet_alternatives", alternatives)):
        for source, target in mapping.items():
            if len(source) != 1 or not isinstance(target, str) or len(target) != 1:
                raise reader.fail(f"{where}.{key}", f"entries map one character to one letter, got {source!r}")
    masks = reader.get(table, "embedding_masks", dict, default={}, where=where)
    for name, phrase in masks.items():
        if not isinstance(phrase, str):
            raise reader.fail(f"{where}.embedding_masks", f"{name} must map to a phrase, got {phrase!r}")
    max_age = reader.get(table, "max_minor_age", int, where=where)
    if not 1 <= max_age <= 30:
        raise reader.fail(f"{where}.max_minor_age", f"must be between 1 and 30, got {max_age}")
    return NormalizePolicy(
        leet=dict(leet),
        leet_alternatives=dict(alternatives),
        allow_phrases=reader.strings(table, "allow_phrases", where=where, default=[]),
        max_minor_age=max_age,
        embedding_masks=dict(masks),
        joinable=reader.strings(table, "joinable", where=where, default=[]),
        common_words=tuple(" ".join(reader.strings(table, "common_words", where=where, default=[])).split()),
    )


def _parse_language(reader: _Reader, code: str, table: Any, known: set[str]) -> LanguagePolicy:
    where = f"languages.{code}"
    if not isinstance(table, dict):
        raise reader.fail(where, "expected a table")
    lists = {}
    for key in ("terms", "patterns"):
        by_category = reader.get(table, key, dict, default={}, where=where)
        unknown = [name for name in by_category if name not in known]
        if unknown:
            raise reader.fail(f"{where}.{key}", f"unknown categor(ies) {', '.join(unknown)}")
        lists[key] = {name: reader.strings(by_category, name, where=f"{where}.{key}") for name in by_category}
    return LanguagePolicy(
        code=code,
        name=reader.get(table, "name", str, where=where),
        hints=tuple(" ".join(reader.strings(table, "hints", where=where, default=[])).split()),
        terms=lists["terms"],
        patterns=lists["patterns"],
        allow_phrases=reader.strings(table, "allow_phrases", where=where, default=[]),
    )


def _with_languages(category: CategoryPolicy, languages: tuple[LanguagePolicy, ...]) -> CategoryPolicy:
    """The category with every language's terms and patterns for it added (matched whatever the language
    of the prompt: a prompt may mix languages, and language identification of a few words is unsure)."""
    terms = category.terms + tuple(t for language in languages for t in language.terms.get(category.name, ()))
    patterns = category.patterns + tuple(p for language in languages for p in language.patterns.get(category.name, ()))
    return replace(category, terms=terms, patterns=patterns)


def _parse_category(reader: _Reader, name: str, table: Any) -> CategoryPolicy:
    where = f"categories.{name}"
    if not isinstance(table, dict):
        raise reader.fail(where, "expected a table")
    return CategoryPolicy(
        name=name,
        action=reader.action(table, where),
        user_reason=reader.get(table, "user_reason", str, default="", where=where),
        description=reader.get(table, "description", str, default=name, where=where),
        terms=reader.strings(table, "terms", where=where, default=[]),
        patterns=reader.strings(table, "patterns", where=where, default=[]),
        ban=reader.get(table, "ban", bool, default=False, where=where),
    )


def _parse_rule(reader: _Reader, index: int, table: Any, known_cues: set[str]) -> RulePolicy:
    where = f"rules[{index}]"
    if not isinstance(table, dict):
        raise reader.fail(where, "expected a table")
    name = reader.get(table, "name", str, where=where)
    where = f"rules.{name}"
    groups = reader.get(table, "requires", list, where=where)
    requires: list[frozenset[str]] = []
    for group in groups:
        cues = [group] if isinstance(group, str) else group
        if not isinstance(cues, list) or not cues:
            raise reader.fail(f"{where}.requires", f"each entry is a cue or a list of cues, got {group!r}")
        unknown = [cue for cue in cues if cue not in known_cues]
        if unknown:
            raise reader.fail(f"{where}.requires", f"unknown cue(s) {', '.join(map(str, unknown))}")
        requires.append(frozenset(cues))
    if len(requires) < 2:
        raise reader.fail(f"{where}.requires", "a combination rule needs at least two groups")
    return RulePolicy(
        name=name,
        requires=tuple(requires),
        action=reader.action(table, where),
        user_reason=reader.get(table, "user_reason", str, default="", where=where),
        description=reader.get(table, "description", str, default=name, where=where),
        ban=reader.get(table, "ban", bool, default=False, where=where),
    )


def _parse_semantic(reader: _Reader, name: str, table: Any) -> SemanticCategory:
    where = f"semantic.{name}"
    if not isinstance(table, dict):
        raise reader.fail(where, "expected a table")
    exemplars = reader.strings(table, "exemplars", where=where)
    if not exemplars:
        raise reader.fail(f"{where}.exemplars", "needs at least one exemplar prompt")
    multilingual = {
        key: reader.fraction(table, key, where) if key in table else None
        for key in ("multilingual_review_threshold", "multilingual_cue_threshold")
    }
    return SemanticCategory(
        name=name,
        exemplars=exemplars,
        review_threshold=reader.fraction(table, "review_threshold", where),
        cue_threshold=reader.fraction(table, "cue_threshold", where),
        user_reason=reader.get(table, "user_reason", str, default="unsure", where=where),
        description=reader.get(table, "description", str, default=name, where=where),
        multilingual_exemplars=reader.strings(table, "multilingual_exemplars", where=where, default=[]),
        **multilingual,
    )


def _parse_image(reader: _Reader, table: Mapping[str, Any]) -> ImagePolicy:
    return ImagePolicy(
        classes=reader.strings(table, "classes", where="image"),
        threshold=reader.fraction(table, "threshold", "image"),
    )


def _check_patterns(reader: _Reader, policy: ModerationPolicy) -> None:
    for category in policy.categories:
        for pattern in category.patterns:
            try:
                re.compile(pattern.replace("{age}", "1"))
            except re.error as exc:
                raise reader.fail(f"categories.{category.name}.patterns", f"{pattern!r}: {exc}") from None
