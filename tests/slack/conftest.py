"""Fixtures shared by the Slack tests: a stand-in Slack on 127.0.0.1, and the service wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.slack_harness import SlackRig, slack_settings, start_rig
from tests.standins.slack_server import SlackStandIn


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as server:
        yield server


@pytest.fixture
async def rig(tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn) -> AsyncIterator[SlackRig]:
    running = await start_rig(slack_settings(tmp_path, tiny_model_dir, standin), standin)
    yield running
    await running.stop()
