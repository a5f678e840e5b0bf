"""The embedding layer's runtimes: the ONNX export must give the torch model's vectors and the same verdicts,
is made once and reused, and is never used when it no longer matches."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from config.settings import ConfigError, load_settings
from moderation import embedding, onnx_export
from moderation.embedding import (
    EXPORT_RECORD,
    MATCH_TOLERANCE,
    ONNX_FILE,
    TorchSentenceEncoder,
    default_model_path,
    export_folder,
    largest_difference,
    model_limits,
    open_encoder,
)
from moderation.prompts import PromptModerator
from moderation.semantic import SemanticScorer
from tests.moderation_support import (
    HOLDOUT_SET,
    MAIN_SET,
    labelled_prompts,
    session_embedding_cache,
    shared_policy,
    shared_scorer,
)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [item["prompt"] for item in labelled_prompts(MAIN_SET) + labelled_prompts(HOLDOUT_SET)]


@pytest.fixture(scope="module")
def torch_scorer() -> SemanticScorer:
    scorer = SemanticScorer(shared_policy().semantic, runtime="torch")
    scorer.load()
    return scorer


def test_the_default_runtime_is_onnx_and_the_session_export_worked() -> None:
    assert load_settings(env={}).moderation.embedding_runtime == "onnx"
    assert shared_scorer().runtime == "onnx"  # a failed export would have fallen back to "torch"


def test_onnx_gives_the_torch_vectors_for_every_labelled_prompt(torch_scorer: SemanticScorer) -> None:
    onnx, reference = shared_scorer()._encoder, torch_scorer._encoder
    assert onnx is not None and reference is not None and reference.runtime == "torch"
    expected = reference.encode(PROMPTS)
    assert largest_difference(onnx.encode(PROMPTS), expected) <= MATCH_TOLERANCE  # padded together
    alone = np.concatenate([onnx.encode([prompt]) for prompt in PROMPTS[::10]])
    assert largest_difference(alone, expected[::10]) <= MATCH_TOLERANCE


def test_both_runtimes_give_the_same_verdicts(torch_scorer: SemanticScorer) -> None:
    with_onnx = PromptModerator(shared_policy(), semantic=shared_scorer()).moderate_many(PROMPTS)
    with_torch = PromptModerator(shared_policy(), semantic=torch_scorer).moderate_many(PROMPTS)
    assert [(v.action, v.categories) for v in with_onnx] == [(v.action, v.categories) for v in with_torch]
    differences = [
        abs(a.scores[name] - b.scores[name]) for a, b in zip(with_onnx, with_torch, strict=True) for name in a.scores
    ]
    assert max(differences) <= MATCH_TOLERANCE


def test_a_cached_export_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    shared_scorer()  # the session's export exists

    def must_not_export(*args: object) -> None:
        raise AssertionError("exported again although a matching export was cached")

    monkeypatch.setattr(onnx_export, "export_sentence_encoder", must_not_export)
    encoder = open_encoder(cache_dir=session_embedding_cache())
    assert encoder.runtime == "onnx"
    assert encoder.encode(["a lighthouse at dawn"]).shape == (1, 384)


def _scale_reference_vectors(folder: Path) -> None:
    record = json.loads((folder / EXPORT_RECORD).read_text())
    record["reference_vectors"] = (np.asarray(record["reference_vectors"]) * 0.9).tolist()
    (folder / EXPORT_RECORD).write_text(json.dumps(record))


def _truncate_graph(folder: Path) -> None:
    graph = folder / ONNX_FILE
    graph.write_bytes(graph.read_bytes()[:1000])


@pytest.mark.parametrize(
    ("damage", "complaint"), [(_scale_reference_vectors, "no longer matches"), (_truncate_graph, "cannot be used")]
)
def test_a_damaged_export_is_not_used(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
    complaint: str,
) -> None:
    """It is made again; here the exporter is unavailable too, so the torch model serves."""
    shared_scorer()
    model = default_model_path()
    folder = export_folder(model, tmp_path)
    shutil.copytree(export_folder(model, session_embedding_cache()), folder)
    damage(folder)

    def exporter_unavailable(*args: object) -> None:
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr(onnx_export, "export_sentence_encoder", exporter_unavailable)
    with caplog.at_level(logging.WARNING, logger=embedding.__name__):
        encoder = open_encoder(cache_dir=tmp_path)
    assert encoder.runtime == "torch"  # slower, same verdicts
    assert complaint in caplog.text and "exporting again" in caplog.text and "exporter unavailable" in caplog.text


def test_an_export_that_differs_from_torch_never_lands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check at export time: here the torch side is made to disagree, so the (real) graph must be refused."""
    model = default_model_path()
    session_graph = export_folder(model, session_embedding_cache()) / ONNX_FILE
    shared_scorer()
    monkeypatch.setattr(onnx_export, "_export_graph", lambda _model, target: shutil.copy(session_graph, target))
    real_encode = TorchSentenceEncoder.encode
    monkeypatch.setattr(TorchSentenceEncoder, "encode", lambda self, texts: real_encode(self, texts) + 0.01)
    folder = export_folder(model, tmp_path)
    with pytest.raises(RuntimeError, match="differs from the torch model"):
        onnx_export.export_sentence_encoder(model, folder, model_limits(model))
    assert not folder.exists()
    assert [p.name for p in folder.parent.iterdir()] == []  # no half-written staging folder left either


def test_an_unknown_runtime_is_refused_by_the_configuration() -> None:
    with pytest.raises(ConfigError, match="moderation.embedding_runtime .*choose one of onnx, torch"):
        load_settings(env={"IMAGINE_MODERATION__EMBEDDING_RUNTIME": "tensorflow"})


@pytest.mark.timeout(240)
def test_first_use_exports_quietly_through_the_real_entry_point(tmp_path: Path) -> None:
    """A machine's first `imagine moderate` makes the export and says so on stderr; stdout carries only the
    verdict."""
    env = {
        **os.environ,
        "IMAGINE_ENGINE__CACHE_DIR": str(tmp_path / "cache"),
        "IMAGINE_STORE__URL": f"sqlite:///{tmp_path}/x.db",
    }
    env.pop("IMAGINE_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "bots", "moderate", "a woman wearing nothing at all", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=230,
        check=True,
    )
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["action"] == "review"
    assert "exporting the sentence-embedding model to ONNX (once per machine" in done.stderr.decode()
    assert list((tmp_path / "cache" / "sentence-embedding").glob(f"*/{EXPORT_RECORD}"))
