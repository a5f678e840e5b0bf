"""What moderation decides about one prompt: a `Verdict`, plain data that can travel as JSON.

`reasons` are for moderators (they may name the matched terms); `user_reason` is a short category from
`moderation.messages.USER_REASONS` that is safe to show the person who asked (it never names the terms).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Action(enum.StrEnum):
    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @classmethod
    def most_severe(cls, actions: Iterable[Action]) -> Action:
        return max(actions, key=lambda action: action.severity, default=cls.ALLOW)


_SEVERITY = {Action.ALLOW: 0, Action.REVIEW: 1, Action.BLOCK: 2}


@dataclass(frozen=True)
class Verdict:
    action: Action
    categories: tuple[str, ...] = ()
    """Every category or rule that fired, e.g. ("nudity", "minors", "rule:minors_sexual", "semantic:nudity")."""
    reasons: tuple[str, ...] = ()
    """Human-readable explanations for moderators; may quote matched terms. Never shown to the requester."""
    user_reason: str = ""
    """Short, user-safe reason category (e.g. "sexual", "minors"); empty when allowed."""
    ban: bool = False
    """True when the verdict demands an immediate ban pending review (sexual content involving minors)."""
    scores: Mapping[str, float] = field(default_factory=dict)
    """Semantic similarity per category (0..1), when the embedding layer ran; for moderators and tuning."""
    language: str = "en"
    """The prompt's language (a code of config/moderation.toml's `[languages.X]`): the refusal is written in it
    (`moderation.messages.admission_message(..., language=)`)."""
    rendering: str = ""
    """For moderators, beside the original prompt: the prompt in Latin letters when it is in another script
    ("golaya zhenshchina na plyazhe"); empty for English and Latin-letter prompts. Not a translation."""

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "categories": list(self.categories),
            "reasons": list(self.reasons),
            "user_reason": self.user_reason,
            "ban": self.ban,
            "scores": {name: round(score, 4) for name, score in self.scores.items()},
            "language": self.language,
            "rendering": self.rendering,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(
            action=Action(data["action"]),
            categories=tuple(data.get("categories", ())),
            reasons=tuple(data.get("reasons", ())),
            user_reason=str(data.get("user_reason", "")),
            ban=bool(data.get("ban", False)),
            scores=dict(data.get("scores", {})),
            language=str(data.get("language", "en")),
            rendering=str(data.get("rendering", "")),
        )


ALLOWED = Verdict(Action.ALLOW)
