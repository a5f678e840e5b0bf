"""Prompt moderation: normalise, match term lists, apply combination rules, compare meanings -> `Verdict`.

    moderator = PromptModerator.from_settings(settings.moderation)
    await moderator.warm_up()                  # optional: load the embedding model now, off the event loop
    verdict = await moderator.check(prompt)    # runs in the moderator's own worker thread
    verdict = moderator.moderate(prompt)       # the same, blocking (CLI, tests, benchmarks)
    moderator.close()                          # stops the worker thread

The verdict is the most severe action among: categories hit on their own, combination rules, and semantic
similarity at or above a category's review threshold (meaning alone holds a prompt for review, never blocks;
it blocks only as a cue inside a rule, e.g. a minor cue + meaning close to nudity). Only the prompt is judged:
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
from moderation.normalize import NormalizedText, Normalizer
from moderation.policy import SEMANTIC_PREFIX, ModerationPolicy
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


class PromptModerator:
    def __init__(self, policy: ModerationPolicy, *, semantic: SemanticScorer | None = None) -> None:
        self.policy = policy
        self.semantic = semantic
        self._normalize = Normalizer(policy.normalize)
        self._terms = TermMatcher(policy)
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: ModerationSettings, cache_dir: str = EngineSettings.cache_dir
                      ) -> PromptModerator:
        """`cache_dir` (engine.cache_dir) keeps the embedding model's ONNX export."""
        policy = ModerationPolicy.load(settings.policy_file or None)
        semantic = None
        if settings.embedding and policy.semantic:
            semantic = SemanticScorer(policy.semantic, runtime=settings.embedding_runtime, cache_dir=cache_dir)
        return cls(policy, semantic=semantic)

    # -- async API (event loop never blocks) ------------------------------------------------------------

    async def warm_up(self) -> None:
        """Load the embedding model (seconds) in the worker thread; later checks are fast."""
        if self.semantic is not None:
            await self._run(self.semantic.load)

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
        """Judge many prompts; the embedding model sees them in one batch (fast for `imagine moderate -`)."""
        texts = [self._normalize(prompt) for prompt in prompts]
        if self.semantic is not None:
            all_scores = self.semantic.scores_many([self._terms.mask(text.readable) for text in texts])
        else:
            all_scores = [{} for _ in texts]
        return [self._judge(text, scores) for text, scores in zip(texts, all_scores, strict=True)]

    def _judge(self, text: NormalizedText, scores: dict[str, float]) -> Verdict:
        hits = self._terms.match(text)
        cues = set(hits.categories) | self._semantic_cues(scores)
        findings = self._category_findings(hits) + self._rule_findings(cues) + self._semantic_findings(scores)
        action = Action.most_severe(f.action for f in findings)
        labels = list(hits.by_category) + [f.label for f in findings if f.label not in hits.by_category]
        if action is Action.ALLOW:
            return Verdict(Action.ALLOW, categories=tuple(labels), scores=scores)
        first = min(findings, key=lambda f: (not f.ban, -f.action.severity))
        return Verdict(
            action=action,
            categories=tuple(labels),
            reasons=tuple(f.reason for f in findings if f.action is not Action.ALLOW),
            user_reason=first.user_reason or "unsure",
            ban=any(f.ban for f in findings),
            scores=scores,
        )

    def _semantic_cues(self, scores: dict[str, float]) -> set[str]:
        return {
            SEMANTIC_PREFIX + category.name
            for category in self.policy.semantic
            if scores.get(category.name, 0.0) >= category.cue_threshold
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

    def _semantic_findings(self, scores: dict[str, float]) -> list[_Finding]:
        findings = []
        for category in self.policy.semantic:
            score = scores.get(category.name, 0.0)
            if score >= category.review_threshold:
                reason = f"{category.description} (similarity {score:.2f})"
                label = SEMANTIC_PREFIX + category.name
                findings.append(_Finding(Action.REVIEW, label, reason, category.user_reason))
        return findings
