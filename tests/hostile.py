"""Shared by the hostile-input property tests (issue 17, item 1): Hypothesis profiles, the example budget of each
property, and the checks every answer a user can see must pass.

Profiles: `fast` (the default, what `make test` and CI run) and `nightly` (`HYPOTHESIS_PROFILE=nightly`, ten times
the examples). Both are derandomized and keep no example database, so a run is the same on every machine, and
have no deadline (no timed assertions)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

T = TypeVar("T")

PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"
NIGHTLY_FACTOR = 10
_COMMON: dict[str, Any] = {
    "derandomize": True,
    "database": None,
    "deadline": None,
    "print_blob": True,
    # The wire-level properties drive one running service from a worker thread: each example is slow by
    # Hypothesis' standards (a round trip through the real library), and that is the point.
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
settings.register_profile("fast", **_COMMON)
settings.register_profile("nightly", **_COMMON)
settings.load_profile(os.environ.get(PROFILE_VARIABLE, "fast"))

BUDGET: dict[str, int] = {
    # tests/test_hostile_parsers.py: pure functions, cheap
    "parsers.button_ids": 1500,
    "parsers.slack_text": 1500,
    "parsers.validation": 1500,
    "parsers.moderation_normalize": 400,
    "parsers.messages": 1100,
    # tests/discord/test_discord_hostile.py: INTERACTION_CREATE through the stand-in gateway to discord.py
    "discord.commands": 600,
    "discord.clicks": 600,
    # tests/slack/test_slack_hostile.py: signed (and unsigned) HTTP posts to slack-bolt's endpoint
    "slack.commands": 900,
    "slack.interactivity": 900,
    "slack.events": 600,
    "slack.raw_bodies": 400,
}
"""Examples per property in the fast profile; each property asserts it ran at least that many."""
FAST_TOTAL_AT_LEAST = 10_000


def examples(name: str) -> int:
    """How many examples property `name` runs under the active profile."""
    factor = NIGHTLY_FACTOR if os.environ.get(PROFILE_VARIABLE) == "nightly" else 1
    return BUDGET[name] * factor


def budget(name: str) -> settings:
    return settings(max_examples=examples(name))


@dataclass
class Counter:
    """How many generated cases a property really ran (Hypothesis may stop early on a small search space)."""

    name: str
    ran: int = 0

    def __call__(self) -> None:
        self.ran += 1

    def check(self) -> None:
        assert self.ran >= examples(self.name), f"{self.name}: ran {self.ran} cases, budget {examples(self.name)}"


# ---- what a user may never see ---------------------------------------------------------------------------------

LEAKS = re.compile(
    r"Traceback|most recent call last|File \"|\.py\b|/work/|site-packages|\b[A-Z][A-Za-z]*(?:Error|Exception)\b"
)


def assert_no_leak(text: str, where: str = "") -> None:
    """No traceback, exception class name or file path in text a user sees."""
    match = LEAKS.search(text)
    assert match is None, f"{where}: internal detail {match.group(0)!r} in what a user sees: {text[:300]!r}"


DISCORD_CONTENT_LIMIT = 2000
DISCORD_BUTTONS_PER_ROW = 5
DISCORD_ROWS = 5
DISCORD_CHOICES = 25
DISCORD_CUSTOM_ID_LIMIT = 100
DISCORD_LABEL_LIMIT = 80


def check_discord_message(body: Any, where: str) -> None:
    """A message body (content, components, choices) as the bot sent it to Discord: within Discord's limits."""
    if not isinstance(body, dict):
        return
    data = body.get("data") if isinstance(body.get("data"), dict) else body
    content = data.get("content")
    if content:
        assert len(content) <= DISCORD_CONTENT_LIMIT, f"{where}: content of {len(content)} characters"
        assert_no_leak(content, where)
    rows = data.get("components") or []
    assert len(rows) <= DISCORD_ROWS, f"{where}: {len(rows)} component rows"
    for row in rows:
        buttons = row.get("components") or []
        assert len(buttons) <= DISCORD_BUTTONS_PER_ROW, f"{where}: {len(buttons)} buttons in a row"
        for button in buttons:
            assert len(button.get("custom_id") or "") <= DISCORD_CUSTOM_ID_LIMIT, where
            assert len(button.get("label") or "") <= DISCORD_LABEL_LIMIT, where
    choices = data.get("choices") or []
    assert len(choices) <= DISCORD_CHOICES, f"{where}: {len(choices)} choices"


SLACK_SECTION_TEXT_LIMIT = 3000
SLACK_TEXT_LIMIT = 40_000
SLACK_BLOCKS_LIMIT = 50
SLACK_ACTIONS_ELEMENTS_LIMIT = 25
SLACK_BUTTON_TEXT_LIMIT = 75
SLACK_BUTTON_VALUE_LIMIT = 2000
SLACK_ACTION_ID_LIMIT = 255


def check_slack_message(args: dict[str, Any], where: str) -> None:
    """chat.postMessage / postEphemeral / update arguments, or a response_url body: within Block Kit's limits."""
    import json

    text = str(args.get("text") or "")
    assert len(text) <= SLACK_TEXT_LIMIT, f"{where}: text of {len(text)} characters"
    assert_no_leak(text, where)
    blocks = args.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    assert len(blocks) <= SLACK_BLOCKS_LIMIT, f"{where}: {len(blocks)} blocks"
    for block in blocks:
        if block.get("type") == "section":
            section = block["text"]["text"]
            assert len(section) <= SLACK_SECTION_TEXT_LIMIT, f"{where}: section of {len(section)} characters"
            assert_no_leak(section, where)
        for element in block.get("elements") or []:
            if element.get("type") == "button":
                assert len(element["text"]["text"]) <= SLACK_BUTTON_TEXT_LIMIT, where
                assert len(element.get("value") or "") <= SLACK_BUTTON_VALUE_LIMIT, where
                assert len(element.get("action_id") or "") <= SLACK_ACTION_ID_LIMIT, where
        assert len(block.get("elements") or []) <= SLACK_ACTIONS_ELEMENTS_LIMIT, where


# ---- the log: a malformed payload is one warning line, never a stack ---------------------------------------------


class StackCatcher(logging.Handler):
    """Every record with a traceback (exc_info, or a stack printed into the message)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.stack_info or "Traceback" in record.getMessage():
            self.records.append(record)

    def describe(self) -> str:
        return "\n".join(f"{r.name}: {r.getMessage()} ({r.exc_info and r.exc_info[1]!r})" for r in self.records[:5])


@contextmanager
def no_stacks_logged() -> Iterator[StackCatcher]:
    catcher = StackCatcher()
    root = logging.getLogger()
    root.addHandler(catcher)
    try:
        yield catcher
    finally:
        root.removeHandler(catcher)
    assert not catcher.records, f"tracebacks logged for user input:\n{catcher.describe()}"


# ---- driving a running service from Hypothesis ---------------------------------------------------------------------


class LoopBridge:
    """Hypothesis' `@given` functions are synchronous; the service runs on the test's event loop. The property
    runs in a worker thread (`run`) and each example hands its coroutine to the loop (`call`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float = 60.0) -> None:
        self._loop = loop
        self._timeout_s = timeout_s

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        assert threading.current_thread() is not threading.main_thread()

        async def run() -> T:
            return await make()

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(self._timeout_s)

    @staticmethod
    async def run(prop: Callable[[], None]) -> None:
        await asyncio.to_thread(prop)
