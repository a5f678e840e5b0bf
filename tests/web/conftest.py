"""Browser fixtures for the web pages' tests: a Chromium per test (launching it takes well under a second) and a
fresh page in its own context (its own cookies: one browser session), failing on any script error the page hits
or any request the CSP blocks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Page, expect

from tests.web.browser import EXPECT_TIMEOUT_MS, chromium

expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


class PageProblems(list[str]):
    """Script errors and console errors (a CSP violation is one) seen by a page."""


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh browser context. After the test: no script error, no CSP violation."""
    context = await browser.new_context(accept_downloads=True)
    opened = await context.new_page()
    problems = PageProblems()

    def on_console(message: ConsoleMessage) -> None:
        # A page answered with a refusal's status (403, 404, 429) is logged as a failed load of the page itself:
        # that is the answer under test, not a problem. A failed stylesheet, script or image is one.
        refused_page = message.text.startswith("Failed to load resource") and message.location["url"] == opened.url
        if message.type == "error" and not refused_page:
            problems.append(f"console: {message.text} ({message.location['url']})")

    def on_error(error: Error) -> None:
        problems.append(f"page error: {error.message}")

    opened.on("console", on_console)
    opened.on("pageerror", on_error)
    try:
        yield opened
    finally:
        await context.close()
    assert problems == [], "the page reported errors:\n" + "\n".join(problems)
