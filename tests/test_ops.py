"""Operations endpoints of a running service over real HTTP: /healthz, /readyz (and why it is not ready), /metrics
counting a real job; the job's one log line with its fields; JSON log lines."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bots.service import Service
from engine.requests import GenerationRequest, Requester
from tests.support import ROOT, make_settings

pytestmark = pytest.mark.timeout(300)
ANN = Requester(platform="web", user_id="ann-7f3a")


@pytest.fixture
async def service(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[Service]:
    started = Service(make_settings(tmp_path, tiny_model_dir, base_size=64, steps=3), adapters=[], admission=None)
    try:
        await started.start()
        yield started
    finally:
        await started.close()


async def get(service: Service, path: str) -> tuple[int, str]:
    assert service.web is not None and service.web.port
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{service.web.port}{path}") as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scrape: dict[tuple[str, Any], float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_healthz_and_readyz_answer_with_every_check(service: Service) -> None:
    assert await get(service, "/healthz") == (200, '{"status": "ok"}')
    status, body = await get(service, "/readyz")
    assert status == 200, body
    assert json.loads(body) == {
        "ready": True,
        "checks": {"store": True, "model_loaded": True, "worker_loop": True, "worker_progress": True, "serving": True},
    }


async def test_readyz_says_503_and_why_when_the_store_is_gone(service: Service) -> None:
    await service.database.close()
    status, body = await get(service, "/readyz")
    assert status == 503
    assert json.loads(body)["checks"]["store"] is False
    assert (await get(service, "/healthz"))[0] == 200  # alive all the same: a restart would not bring it back


async def test_metrics_count_a_real_job_and_its_log_line_carries_its_fields(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    before = samples((await get(service, "/metrics"))[1])
    with caplog.at_level(logging.INFO, logger="imagine.jobs"):
        job = await service.engine.submit(GenerationRequest(prompt="a lighthouse at dawn", requester=ANN))
        await job.result()
    status, text = await get(service, "/metrics")
    after = samples(text)
    assert status == 200

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("imagine_jobs_total", outcome="done") == 1
    assert grew("imagine_images_total") == 4
    assert grew("imagine_queue_wait_seconds_count") == 1
    assert grew("imagine_job_duration_seconds_count", outcome="done") == 1
    assert grew("imagine_batch_size_count") == 1 and grew("imagine_batch_size_sum") == 4
    assert grew("imagine_step_seconds_count") == 2  # three steps: the first one's time includes encoding
    assert value(after, "imagine_queue_depth", queue="memory") == 0
    assert "ann-7f3a" not in text  # no user ids as labels

    (line,) = [record for record in caplog.records if record.name == "imagine.jobs"]
    fields = vars(line)
    assert (fields["job_id"], fields["platform"], fields["outcome"]) == (job.id, "web", "done")
    assert fields["queue_wait_s"] >= 0 and fields["run_s"] > 0 and fields["generate_s"] > 0
    assert line.getMessage().startswith(f"job {job.id} done on web for web:ann-7f3a: queue wait ")


def test_json_log_lines_carry_a_jobs_fields_as_keys() -> None:
    """log.format = "json" as `imagine serve` applies it (config/logs.py), in a process of its own."""
    script = """
import logging
from config.logs import apply_log_settings
from config.settings import LogSettings, Settings
from engine import metrics
from engine.requests import JobState, Requester
logging.basicConfig(level=logging.WARNING)
apply_log_settings(Settings(log=LogSettings(format="json", level="info")))
metrics.job_ended("j1", Requester(platform="slack", user_id="U1"), JobState.FAILED, queue_wait_s=1.5, run_s=None,
                  error=TimeoutError("took too long"))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    (line,) = completed.stderr.splitlines()
    record = json.loads(line)
    assert record["logger"] == "imagine.jobs" and record["level"] == "INFO"
    assert {key: record[key] for key in ("job_id", "platform", "outcome", "queue_wait_s", "run_s")} == {
        "job_id": "j1",
        "platform": "slack",
        "outcome": "failed",
        "queue_wait_s": 1.5,
        "run_s": None,
    }
    assert (record["error_kind"], record["error"]) == ("TimeoutError", "took too long")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_configured_secrets_are_redacted_from_log_lines_and_tracebacks(log_format: str) -> None:
    """What a library or an error message says is redacted too: each secret becomes [redacted], in the message
    and in the traceback, in either format."""
    script = f"""
import logging
from dataclasses import replace
from config.logs import apply_log_settings
from config.settings import LogSettings, Settings
logging.basicConfig(level=logging.WARNING)
base = Settings(log=LogSettings(format={log_format!r}, level="debug"))
settings = replace(
    base,
    slack=replace(base.slack, client_secret="client-s3cret-0d9f"),
    store=replace(base.store, url="postgresql://imagine:pg-pw-77a1c@db.example/imagine"),
)
apply_log_settings(settings)
log = logging.getLogger("slack_sdk.web.async_base_client")
log.debug("Sending a request - body: {{'client_secret': 'client-s3cret-0d9f'}}")
try:
    raise OSError("cannot reach postgresql://imagine:pg-pw-77a1c@db.example/imagine")
except OSError:
    log.exception("the store failed")
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    output = completed.stderr
    assert "client-s3cret-0d9f" not in output and "pg-pw-77a1c" not in output
    assert output.count("[redacted]") == 2 and "Traceback" in output and "OSError" in output
    if log_format == "json":
        assert [json.loads(line)["level"] for line in output.splitlines()] == ["DEBUG", "ERROR"]
