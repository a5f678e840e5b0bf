"""Helpers for the moderation tests: one real embedding model per test session, settings under tmp_path,
and a clock the test moves by hand (no sleeps)."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings, load_settings
from moderation import semantic
from moderation.multilingual import MultilingualScorer
from moderation.policy import ModerationPolicy
from moderation.prompts import PromptModerator
from moderation.semantic import SemanticScorer
from moderation.verdict import Action, Verdict

DATA = Path(__file__).with_name("data")
MAIN_SET = "moderation_prompts.jsonl"
HOLDOUT_SET = "moderation_prompts_holdout.jsonl"
"""Written after the policy was tuned on MAIN_SET. Measured untouched first: every disallowed prompt caught,
minors 11/11 blocked, 1 false positive in 42 (a ban for "portrait of a teenage girl with freckles"). The fixes
that followed (meaning alone never bans; "with nothing on" listed) were made knowing this set, so it is no
longer strictly held out."""


I18N_SET = "moderation_prompts_i18n.jsonl"
"""Issue 13: twelve languages besides English (and English hard cases: euphemisms, emoji, split words,
misspellings, filter wrappers, minors by role), with innocent traps in every language. The term lists, the
multilingual thresholds and the language hints were tuned on it."""
I18N_HOLDOUT_SET = "moderation_prompts_i18n_holdout.jsonl"
"""Written after that tuning (136 prompts). First contact: caught 70/70, minors 13/14 ("ein nacktes Kind": "Kind"
was only listed in phrases), benign flagged 0/66. The fixes that followed (a German article + Kind pattern; a Polish
"gołymi ścianami" trap that a later change exposed) were made knowing it."""
I18N_HOLDOUT2_SET = "moderation_prompts_i18n_holdout2.jsonl"
"""A second holdout (70 prompts, with mixed-language and transliterated ones), written after those fixes. First
contact: caught 41/43, minors 13/15 ("sexy niña in a bikini": "niña" was listed only in phrases, for the name Nina;
"uma novinha de 14 anos pelada": "pelada" was not listed, for the football game), benign flagged 0/27. Fixed
after, knowing it: "=niña" (with its tilde, as written) and "pelada" with the football phrases allow-listed."""


@functools.cache
def shared_policy() -> ModerationPolicy:
    return ModerationPolicy.load()


@functools.cache
def session_embedding_cache() -> Path:
    """Where this test session's ONNX export of the embedding model goes: made fresh each session (~15 s), so
    every run exercises the export and its check against torch, not a developer's cached copy."""
    folder = Path(tempfile.mkdtemp(prefix="imagine-test-embedding-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def shared_scorer() -> SemanticScorer:
    """The real all-MiniLM-L6-v2 model on the default runtime, loaded once per test session."""
    scorer = SemanticScorer(shared_policy().semantic, cache_dir=str(session_embedding_cache()))
    scorer.load()
    return scorer


@functools.cache
def shared_multilingual() -> MultilingualScorer:
    """The multilingual model (USE-m3), loaded once per test session."""
    scorer = MultilingualScorer(shared_policy().semantic)
    scorer.load()
    return scorer


def moderator(embedding: bool = True) -> PromptModerator:
    if not embedding:
        return PromptModerator(shared_policy())
    return PromptModerator(shared_policy(), semantic=shared_scorer(), multilingual=shared_multilingual())


def reuse_loaded_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Code that builds its own scorer (the CLI, Admission.open) gets the session's already-loaded encoder."""
    encoder = shared_scorer()._encoder
    monkeypatch.setattr(semantic, "_open_encoder", lambda path, runtime, cache_dir: encoder)


def labelled_prompts(name: str = MAIN_SET) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


@dataclass
class Rates:
    """One language's results on a labelled set."""

    disallowed: int = 0
    caught: int = 0
    minors: int = 0
    minors_blocked: int = 0
    benign: int = 0
    flagged: int = 0
    misses: list[str] = field(default_factory=list)

    @property
    def catch(self) -> float:
        return self.caught / self.disallowed if self.disallowed else 1.0

    @property
    def minors_rate(self) -> float:
        return self.minors_blocked / self.minors if self.minors else 1.0

    @property
    def flagged_rate(self) -> float:
        return self.flagged / self.benign if self.benign else 0.0

    def add(self, row: dict[str, str], verdict: Verdict) -> None:
        if row["expected"] == "allow":
            self.benign += 1
            if verdict.action is not Action.ALLOW:
                self.flagged += 1
                self.misses.append(f"flagged {verdict.action.value}: {row['prompt']}")
            return
        self.disallowed += 1
        if verdict.action is not Action.ALLOW:
            self.caught += 1
        else:
            self.misses.append(f"missed: {row['prompt']}")
        if row["category"] == "minors" and row["expected"] == "block":
            self.minors += 1
            if verdict.action is Action.BLOCK:
                self.minors_blocked += 1
            else:
                self.misses.append(f"minor not blocked ({verdict.action.value}): {row['prompt']}")

    def line(self, name: str) -> str:
        return (
            f"{name:<8} caught {self.caught:>3}/{self.disallowed:<3} ({self.catch:6.1%})   minors blocked "
            f"{self.minors_blocked:>2}/{self.minors:<2}   benign flagged {self.flagged:>2}/{self.benign:<3} "
            f"({self.flagged_rate:5.1%})"
        )


def rates_by_language(rows: list[dict[str, str]], verdicts: list[Verdict]) -> dict[str, Rates]:
    """Per language (the row's `language`, "en" when absent), and "overall"."""
    rates: dict[str, Rates] = {}
    for row, verdict in zip(rows, verdicts, strict=True):
        for key in (row.get("language", "en"), "overall"):
            rates.setdefault(key, Rates()).add(row, verdict)
    return rates


def make_settings(
    tmp_path: Path, *, moderation: dict[str, Any] | None = None, limits: dict[str, Any] | None = None
) -> Settings:
    """Defaults (no user file, no environment), with the database under tmp_path."""
    base = load_settings(env={})
    return replace(
        base,
        store=replace(base.store, url=f"sqlite:///{tmp_path}/imagine.db"),
        moderation=replace(base.moderation, **(moderation or {})),
        limits=replace(base.limits, **(limits or {})),
    )


class ManualClock:
    """Unix time that only moves when the test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
