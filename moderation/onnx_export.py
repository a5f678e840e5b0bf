"""Export the sentence-embedding model to ONNX, and prove the export gives the torch model's vectors.

The graph takes `input_ids` and `attention_mask` (any batch, any length) and returns unit-length mean-pooled
vectors, i.e. the whole sentence-transformers pipeline after tokenisation. It is made with the dynamo exporter
(`torch.onnx.export(..., dynamo=True)`): the TorchScript exporter baked transformers' length-dependent attention
masking into the graph as constants, which gave wrong vectors at other lengths.

Nothing lands in the cache unless ONNX Runtime reproduces the torch vectors (singly and padded in a batch, short
and truncated texts) within `MATCH_TOLERANCE`; the folder appears whole, by rename, or not at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moderation.encoders import (
    EXPORT_RECORD,
    MATCH_TOLERANCE,
    ONNX_FILE,
    ModelLimits,
    OnnxSentenceEncoder,
    TorchSentenceEncoder,
    largest_difference,
    model_fingerprint,
)

logger = logging.getLogger(__name__)

REFERENCE_TEXTS = [
    "a lighthouse at dawn, oil painting",
    "cat",
    "",
    "a woman wearing nothing at all, every detail visible",
    "ｆｕｌｌ-width letters, émojis 🌅 and ünïcödé",
    " ".join(["a very long prompt about a quiet harbour town at dusk"] * 40),  # past max_seq_length: truncated
]


def export_sentence_encoder(model_path: Path, folder: Path, limits: ModelLimits) -> None:
    """Write `folder/model.onnx` and `folder/export.json`; raises if ONNX Runtime does not match torch."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        reference = TorchSentenceEncoder(model_path)
        _export_graph(reference.model, staging / ONNX_FILE)
        exported = OnnxSentenceEncoder(staging / ONNX_FILE, model_path, limits)
        expected = reference.encode(REFERENCE_TEXTS)
        difference = _worst_difference(exported, expected)
        if difference > MATCH_TOLERANCE:
            raise RuntimeError(
                f"the ONNX export differs from the torch model by {difference:.2e} (allowed {MATCH_TOLERANCE:.0e})"
            )
        record = {
            "fingerprint": model_fingerprint(model_path),
            "max_seq_length": limits.max_seq_length,
            "largest_difference": difference,
            "reference_texts": REFERENCE_TEXTS,
            "reference_vectors": expected.tolist(),
        }
        (staging / EXPORT_RECORD).write_text(json.dumps(record), encoding="utf-8")
        _put_in_place(staging, folder)
        logger.info("ONNX export verified (largest difference %.1e) in %s", difference, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _worst_difference(exported: OnnxSentenceEncoder, expected: np.ndarray) -> float:
    """Each text alone (no padding) and all together (padded to the longest): both must match."""
    alone = np.concatenate([exported.encode([text]) for text in REFERENCE_TEXTS])
    together = exported.encode(REFERENCE_TEXTS)
    return max(largest_difference(alone, expected), largest_difference(together, expected))


def _export_graph(sentence_transformer: Any, target: Path) -> None:
    module = _PooledEncoder(sentence_transformer[0].auto_model).eval()
    sample = sentence_transformer.tokenizer(
        ["a short prompt", "a somewhat longer prompt with more words"], padding=True, return_tensors="pt"
    )
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    axes = {0: batch, 1: length}
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            (sample["input_ids"], sample["attention_mask"]),
            dynamo=True,
            optimize=True,
            verbose=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_vector"],
            dynamic_shapes={"input_ids": axes, "attention_mask": axes},
        )
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(target))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter and its optimiser log hundreds of lines about their own passes and warn about their
    internals (and torchvision's absence); none of it is ours to act on. Our own log says what happened."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def _put_in_place(staging: Path, folder: Path) -> None:
    """Rename the finished export into place; a stale folder goes first. If another process got there first,
    its export (checked the same way) stays."""
    if folder.exists():
        stale = folder.parent / f".{folder.name}.stale-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            folder.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.rename(folder)
    except OSError:
        if not (folder / EXPORT_RECORD).is_file():
            raise


class _PooledEncoder(torch.nn.Module):
    """BERT, then the mean of the token vectors under the attention mask, then unit length."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        mean = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=1)
