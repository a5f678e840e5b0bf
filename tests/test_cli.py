"""The `imagine` command line: bad input exits 2 with one clear line; generate writes four JPEGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bots.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", ""], "prompt must not be empty"),
        (["generate", "x" * 1001], "prompt is too long: 1001 characters, the limit is 1000"),
        (["generate", "a cat", "--aspect", "0:1"], "aspect sides must be greater than 0"),
        (["generate", "a cat", "--aspect", "50:1"], "aspect must be between 1:4 and 4:1"),
        (["generate", "a cat", "--aspect", "wide"], "aspect must look like W:H"),
        (["generate", "a cat", "--seed", "abc"], "seed must be a whole number, got 'abc'"),
        (["generate", "a cat", "--steps", "500"], "steps must be between 1 and 50, got 500"),
        (["generate"], "the following arguments are required: prompt"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMAGINE_CONFIG", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_unknown_config_key_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_ENGINE__NOPE", "1")
    assert main(["generate", "a cat"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown config key engine.nope (from environment variable IMAGINE_ENGINE__NOPE)" in err
    assert len(err.splitlines()) == 1


@pytest.mark.timeout(600)
def test_generate_in_a_fresh_process_writes_four_jpegs(tmp_path: Path, tiny_model_dir: Path) -> None:
    env = {
        **os.environ,
        "IMAGINE_ENGINE__MODEL": str(tiny_model_dir),
        "IMAGINE_ENGINE__BASE_SIZE": "256",
        "IMAGINE_ENGINE__STEPS": "2",
        "IMAGINE_STORE__URL": f"sqlite:///{tmp_path}/imagine.db",
        "IMAGINE_ENGINE__CACHE_DIR": str(tmp_path / "cache"),
    }  # the C2PA development pair goes there
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bots",
            "generate",
            "a lighthouse at dawn",
            "--seed",
            "5",
            "--aspect",
            "16:9",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["seeds"] == [5, 6, 7, 8]
    assert len(summary["paths"]) == 4
    for path in summary["paths"]:
        assert Path(path).parent == tmp_path / "out"
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == (320, 192)  # 16:9 at about 256² pixels, multiples of 64
    assert set(summary["timings"]) >= {"queue_wait_s", "generate_s", "postprocess_s", "total_s"}

    plain = subprocess.run(
        [sys.executable, "-m", "bots", "generate", "a lighthouse at dawn", "--out", str(tmp_path / "plain")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert plain.returncode == 0, plain.stderr
    assert [Path(line).suffix for line in plain.stdout.split()] == [".jpg"] * 4
