"""Helpers shared by tests: settings pointing at a temporary folder, and a gate that holds the real pipeline."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from bots.conversation import Conversation
from config.settings import Settings, load_settings
from engine.local import LocalJobQueue
from engine.store import JobStore
from engine.worker.batches import load_runner
from engine.worker.runner import PipelineRunner
from storage.database import Database

ROOT = Path(__file__).resolve().parents[1]


def serve_environment(tmp_path: Path, model_dir: Path, **imagine: str) -> dict[str, str]:
    """The environment for an `imagine serve` child process: this process's, minus any IMAGINE_ setting, with a
    small fast engine writing under `tmp_path`; `imagine` adds settings, e.g. `SLACK__MODE="socket"`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGINE_")}
    defaults = {
        "ENGINE__MODEL": str(model_dir),
        "ENGINE__BASE_SIZE": "64",
        "ENGINE__STEPS": "1",
        "ENGINE__OUTPUT_DIR": str(tmp_path / "images"),
        "STORE__URL": f"sqlite:///{tmp_path}/imagine.db",
        "MODERATION__EMBEDDING": "false",
        "MODERATION__IMAGE_SCREENING": "false",
        "WEB__PORT": "0",
    }
    return env | {f"IMAGINE_{key}": value for key, value in (defaults | imagine).items()} | {"PYTHONPATH": str(ROOT)}


async def stopped(process: asyncio.subprocess.Process) -> None:
    """However a test ended: a serve process still running is killed and reaped."""
    if process.returncode is None:
        process.kill()
        await process.wait()


async def start_serve(env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log:  # a file, not a pipe: nobody has to keep draining it
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots", "serve", cwd=ROOT, env=env, stdout=log, stderr=log
        )


def make_settings(tmp_path: Path, model_dir: Path | str, **engine: Any) -> Settings:
    """Defaults (no user file, no environment), with the model, images and database under `tmp_path`."""
    base = load_settings(env={})
    engine_settings = replace(
        base.engine,
        model=str(model_dir),
        cache_dir=str(tmp_path / "cache"),
        output_dir=str(tmp_path / "images"),
        **engine,
    )
    return replace(
        base,
        engine=engine_settings,
        store=replace(base.store, url=f"sqlite:///{tmp_path}/imagine.db"),
        web=replace(base.web, port=0),  # any free port: tests (and other checkouts' tests) run side by side
    )


class UnetGate:
    """Holds the pipeline thread inside chosen UNet calls (numbered from 1) until the test releases them.

    The pipeline itself is real; only the moment it proceeds is chosen by the test, so ordering-dependent
    behaviour (fairness, batching, cancelling a running job) can be observed without sleeps."""

    def __init__(self, runner: PipelineRunner, *hold_calls: int) -> None:
        self.calls = 0
        self._hold_calls = hold_calls or (1,)
        self._reached = {number: threading.Event() for number in self._hold_calls}
        self._released = {number: threading.Event() for number in self._hold_calls}
        unet = runner.pipe.unet
        original = unet.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls in self._reached:
                self._reached[self.calls].set()
                self._released[self.calls].wait(timeout=120)
            return original(*args, **kwargs)

        unet.forward = forward

    async def wait_reached(self, call: int | None = None) -> None:
        event = self._reached[call or self._hold_calls[0]]
        assert await asyncio.to_thread(event.wait, 120), "the pipeline never reached the gate"

    def release(self, call: int | None = None) -> None:
        self._released[call or self._hold_calls[0]].set()


async def started_queue(settings: Settings, **engine_kwargs: Any) -> tuple[LocalJobQueue, Database]:
    """A started in-process queue and its database, for a Conversation built by hand (as `Service` shares its
    database between them). Shutting the queue down closes the database."""
    store = await JobStore.open(settings.store.url)
    engine = LocalJobQueue(settings, store=store, **engine_kwargs)
    await engine.start()
    return engine, store.database


def gated_runner(settings: Settings, *hold_calls: int) -> tuple[PipelineRunner, UnetGate]:
    runner = load_runner(settings)
    return runner, UnetGate(runner, *hold_calls)


async def conversation_settled(conversation: Conversation, timeout_s: float = 120.0) -> None:
    """Wait for the conversation's follow and deliver tasks (not its endless sweeps); they end once the job
    store has recorded the delivery, or given up on it."""
    await asyncio.wait_for(conversation.settled(), timeout_s)


def rig_conversation_options(redelivery_interval_s: float = 60.0, review_poll_s: float = 3600.0) -> dict[str, Any]:
    """The conversation as the platform rigs run it: every status shown, retries at once, no review polling
    (unless `review_poll_s` asks for it)."""
    return {
        "progress_interval_s": 0.0,
        "delivery_retry_delays": (0.0, 0.0),
        "review_poll_s": review_poll_s,
        "redelivery_interval_s": redelivery_interval_s,
    }
