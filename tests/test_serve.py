"""`imagine serve` as a process: starts, says it is serving, and shuts down cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bots.service import Service
from engine.local import QueueState
from engine.worker.runner import PipelineRunner
from tests.support import make_settings, serve_environment


def wait_for_line(process: subprocess.Popen[str], needle: str) -> list[str]:
    lines: list[str] = []
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"the process ended before printing {needle!r}:\n{''.join(lines)}")


@pytest.mark.timeout(300)
def test_serve_without_credentials_runs_answers_probes_and_stops_on_sigterm(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """With log.format = "json" every line is a JSON object; /healthz and /readyz answer over real HTTP."""
    env = serve_environment(tmp_path, tiny_model_dir, LOG__FORMAT="json")
    env.pop("IMAGINE_DISCORD__TOKEN", None)
    env.pop("IMAGINE_SLACK__BOT_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "bots", "serve"],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        lines = wait_for_line(process, "imagine is serving")
        records = [json.loads(line) for line in lines]
        assert any("no chat platform has credentials" in record["message"] for record in records)
        (web,) = [record["message"] for record in records if record["logger"] == "bots.web.server"]
        port = int(web.split("http://127.0.0.1:")[1].split(" ")[0])
        for path in ("/healthz", "/readyz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert all(json.loads(line)["level"] for line in rest.splitlines())
    assert "Traceback" not in rest


@pytest.mark.timeout(120)
def test_serve_with_a_missing_slack_secret_names_the_variable(tmp_path: Path, tiny_model_dir: Path) -> None:
    env = {
        **os.environ,
        "IMAGINE_ENGINE__MODEL": str(tiny_model_dir),
        "IMAGINE_STORE__URL": f"sqlite:///{tmp_path}/imagine.db",
        "IMAGINE_MODERATION__EMBEDDING": "false",
        "IMAGINE_SLACK__BOT_TOKEN": "xoxb-test",
        "IMAGINE_SLACK__SIGNING_SECRET": "",
        "IMAGINE_WEB__PORT": "0",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "bots", "serve"], cwd=tmp_path, env=env, text=True, capture_output=True, timeout=120
    )
    assert completed.returncode == 2
    assert "IMAGINE_SLACK__SIGNING_SECRET" in completed.stderr
    assert "Traceback" not in completed.stderr


class ModelMissing(RuntimeError):
    pass


def missing_model() -> PipelineRunner:
    raise ModelMissing("no model at the configured path")


async def test_a_model_that_fails_to_load_stops_the_start_and_close_closes_what_opened(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The model load and admission's warm-up run side by side: the engine's failure is the start's error, and
    the admission that did open is closed with the rest."""
    settings = make_settings(tmp_path, tiny_model_dir, base_size=64, steps=2)
    service = Service(settings, adapters=[], runner_factory=missing_model)
    with pytest.raises(ModelMissing):
        await service.start()
    assert service.admission is not None  # it opened beside the failing model load
    await service.close()
    assert service.engine.state is QueueState.STOPPED
