"""Prompt moderation: normalise, match term lists, apply combination rules, compare meanings -> `Verdict`.

    moderator = PromptModerator.from_settings(settings.moderation)
    await moderator.warm_up()                  # optional: load the embedding model now, off the event loop
    verdict = await moderator.check(prompt)    # runs in the moderator's own worker thread
    verdict = moderator.moderate(prompt)       # the same, blocking (CLI, tests, benchmarks)
    moderator.close()                          # stops the worker thread

The verdict is the most severe action among: categories hit on their own, combination rules, and semantic
similarity at or above a category's review threshold (meaning alone holds a prompt for review, never blocks;
it blocks only as a cue inside a rule, e.g. a minor cue + meaning close to nudity). The term lists of every
language are matched on every prompt; the meaning of a prompt identified as English is judged by the English
model (moderation/semantic.py), that of any other by the multilingual one (moderation/multilingual.py), each
with its own thresholds. The verdict names the language, so the refusal can be written in it. Only the prompt is judged:
negative prompts routinely list what users want to avoid ("nsfw, nude") and are not moderated as prompts;
whatever they might cause is caught by image screening.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from config.settings import EngineSettings, ModerationSettings
from moderation.languages import ENGLISH, LanguageIdentifier
from moderation.multilingual import MultilingualScorer
from moderation.normalize import UNSPACED, NormalizedText, Normalizer
from moderation.policy import SEMANTIC_PREFIX, ModerationPolicy, SemanticCategory
from moderation.semantic import SemanticScorer
from moderation.terms import TermHits, TermMatcher
from moderation.verdict import Action, Verdict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Finding:
    action: Action
    label: str
    reason: str
    user_reason: str
    ban: bool = False


@dataclass(frozen=True)
class _Thresholds:
    review: float
    cue: float


class PromptModerator:
    def __init__(
        self,
        policy: ModerationPolicy,
        *,
        semantic: SemanticScorer | None = None,
        multilingual: MultilingualScorer | None = None,
    ) -> None:
        self.policy = policy
        self.semantic = semantic
        self.multilingual = multilingual
        self._normalize = Normalizer(policy.normalize)
        self._terms = TermMatcher(policy)
        self._identify = LanguageIdentifier(policy.languages)
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: ModerationSettings, cache_dir: str = EngineSettings.cache_dir) -> PromptModerator:
        """`cache_dir` (engine.cache_dir) keeps the embedding model's ONNX export."""
        policy = ModerationPolicy.load(settings.policy_file or None)
        semantic = multilingual = None
        if settings.embedding and policy.semantic:
            semantic = SemanticScorer(policy.semantic, runtime=settings.embedding_runtime, cache_dir=cache_dir)
            if any(c.multilingual_review_threshold is not None for c in policy.semantic):
                multilingual = MultilingualScorer(policy.semantic)
        return cls(policy, semantic=semantic, multilingual=multilingual)

    # -- async API (event loop never blocks) ------------------------------------------------------------

    async def warm_up(self) -> None:
        """Load the embedding models (seconds) in the worker thread; later checks are fast."""
        if self.semantic is not None:
            await self._run(self.semantic.load)
        if self.multilingual is not None:
            await self._run(self.multilingual.load)

    async def check(self, prompt: str) -> Verdict:
        return await self._run(self.moderate, prompt)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    async def _run(self, function, *args):  # type: ignore[no-untyped-def]
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt-moderation")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # -- blocking API -----------------------------------------------------------------------------------

    def moderate(self, prompt: str) -> Verdict:
        return self.moderate_many([prompt])[0]

    def moderate_many(self, prompts: Sequence[str]) -> list[Verdict]:
        """Judge many prompts; each embedding model sees its prompts in one batch (fast for `imagine moderate -`)."""
        texts = [self._normalize(prompt) for prompt in prompts]
        languages = [self._identify(text) for text in texts]
        all_scores = self._scores(texts, languages)
        return [
            self._judge(text, scores, language)
            for text, scores, language in zip(texts, all_scores, languages, strict=True)
        ]

    def language(self, prompt: str) -> str:
        """The prompt's language code ("en", "es"...), without judging it (for messages before moderation)."""
        return self._identify(self._normalize(prompt))

    def _scores(self, texts: list[NormalizedText], languages: list[str]) -> list[dict[str, float]]:
        """Meaning scores: the English model for English prompts, the multilingual one for the others."""
        all_scores: list[dict[str, float]] = [{} for _ in texts]
        english = [i for i, language in enumerate(languages) if language == ENGLISH or self.multilingual is None]
        foreign = sorted(set(range(len(texts))) - set(english))
        if self.semantic is not None and english:
            found = self.semantic.scores_many([self._terms.mask(texts[i].readable) for i in english])
            for index, scores in zip(english, found, strict=True):
                all_scores[index] = scores
        if self.multilingual is not None and foreign:
            found = self.multilingual.scores_many([self._terms.for_meaning(texts[i]) for i in foreign])
            for index, scores in zip(foreign, found, strict=True):
                all_scores[index] = scores
        return all_scores

    def _judge(self, text: NormalizedText, scores: dict[str, float], language: str = ENGLISH) -> Verdict:
        hits = self._terms.match(text)
        thresholds = self._thresholds(language)
        cues = set(hits.categories) | self._semantic_cues(scores, thresholds)
        findings = (
            self._category_findings(hits) + self._rule_findings(cues) + self._semantic_findings(scores, thresholds)
        )
        action = Action.most_severe(f.action for f in findings)
        labels = list(hits.by_category) + [f.label for f in findings if f.label not in hits.by_category]
        rendering = self._rendering(text) if self._identify.foreign_letters(text) else ""
        if action is Action.ALLOW:
            return Verdict(
                Action.ALLOW, categories=tuple(labels), scores=scores, language=language, rendering=rendering
            )
        first = min(findings, key=lambda f: (not f.ban, -f.action.severity))
        reasons = tuple(f.reason for f in findings if f.action is not Action.ALLOW)
        if language != ENGLISH:  # moderators read the reasons: say what language, and show it in Latin letters
            reasons += (
                f"prompt in {self._identify.names.get(language, language)}"
                + (f"; in Latin letters: {rendering!r}" if rendering else ""),
            )
        return Verdict(
            action=action,
            categories=tuple(labels),
            reasons=reasons,
            user_reason=first.user_reason or "unsure",
            ban=any(f.ban for f in findings),
            scores=scores,
            language=language,
            rendering=rendering,
        )

    @staticmethod
    def _rendering(text: NormalizedText) -> str:
        """The prompt in Latin letters, for moderators who cannot read its script: "golaya zhenshchina",
        pinyin, romanised kana and Hangul. Not a translation; the reasons give the meaning of what matched."""
        from anyascii import anyascii

        spaced = "".join(f" {ch} " if UNSPACED.match(ch) else ch for ch in text.original)  # one syllable each
        return " ".join(anyascii(spaced).split())

    def _thresholds(self, language: str) -> dict[str, _Thresholds]:
        def pick(category: SemanticCategory) -> _Thresholds:
            if language == ENGLISH or self.multilingual is None:
                return _Thresholds(category.review_threshold, category.cue_threshold)
            review = category.multilingual_review_threshold
            cue = category.multilingual_cue_threshold
            return _Thresholds(2.0 if review is None else review, 2.0 if cue is None else cue)  # 2: never

        return {category.name: pick(category) for category in self.policy.semantic}

    def _semantic_cues(self, scores: dict[str, float], thresholds: dict[str, _Thresholds]) -> set[str]:
        return {
            SEMANTIC_PREFIX + category.name
            for category in self.policy.semantic
            if scores.get(category.name, 0.0) >= thresholds[category.name].cue
        }

    def _category_findings(self, hits: TermHits) -> list[_Finding]:
        findings = []
        for category in self.policy.categories:
            terms = hits.by_category.get(category.name)
            if terms and category.action is not Action.ALLOW:
                reason = f"{category.description}: {', '.join(repr(t) for t in terms)}"
                findings.append(_Finding(category.action, category.name, reason, category.user_reason, category.ban))
        return findings

    def _rule_findings(self, cues: set[str]) -> list[_Finding]:
        findings = []
        for rule in self.policy.rules:
            matched = [sorted(group & cues) for group in rule.requires]
            if all(matched):
                because = " + ".join("/".join(group) for group in matched)
                reason = f"{rule.description} ({because})"
                findings.append(_Finding(rule.action, f"rule:{rule.name}", reason, rule.user_reason, rule.ban))
        return findings

    def _semantic_findings(self, scores: dict[str, float], thresholds: dict[str, _Thresholds]) -> list[_Finding]:
        findings = []
        for category in self.policy.semantic:
            score = scores.get(category.name, 0.0)
            if score >= thresholds[category.name].review:
                reason = f"{category.description} (similarity {score:.2f})"
                label = SEMANTIC_PREFIX + category.name
                findings.append(_Finding(Action.REVIEW, label, reason, category.user_reason))
        return findings
