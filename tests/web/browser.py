"""Playwright in a real browser: Debian's Chromium (/usr/bin/chromium), never a browser Playwright downloads.

    async with chromium() as browser:             # or the `browser` / `page` fixtures of tests/web/conftest.py
        page = await browser.new_page()
        await page.goto(url)
        await expect(page.get_by_role("img")).to_have_count(4)   # wait on what the page shows, never "networkidle"
        shot = await screenshot(page, "playground-done")        # tests/artefacts/<name>.png, for people to look at
        await update_docs_screenshot(shot, "playground.png")    # docs/screenshots/ too, when asked (see README)

Chromium is missing on a fresh machine: `apt-get install -y chromium` (.ci/run does it).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path(os.environ.get("IMAGINE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
ARTEFACTS = Path(__file__).resolve().parents[1] / "artefacts"
"""Screenshots of every page the browser tests visit (git-ignored; CI may keep them)."""
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
"""The README's screenshots (committed): rewritten only when asked, so that a test run leaves the tree clean."""
UPDATE_SCREENSHOTS = "IMAGINE_UPDATE_SCREENSHOTS"
EXPECT_TIMEOUT_MS = 60_000
"""How long `expect(...)` waits for the page to show something: a limit for a broken page, not a timing."""


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not await asyncio.to_thread(CHROMIUM.exists):
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's Chromium (apt-get install -y chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str, directory: Path = ARTEFACTS) -> Path:
    """Save the whole page as `<directory>/<name>.png` and return the path."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    path = directory / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def update_docs_screenshot(shot: Path, name: str) -> Path | None:
    """Copy `shot` to docs/screenshots/<name> when IMAGINE_UPDATE_SCREENSHOTS=1 (to retake the README's pictures);
    otherwise leave the committed one alone. Returns where it was copied, if anywhere."""
    if os.environ.get(UPDATE_SCREENSHOTS) != "1":
        return None
    target = DOCS_SCREENSHOTS / name
    await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(shutil.copyfile, shot, target)
    return target
