"""A running service with the playground, and a browser-like HTTP client of it (cookies, CSRF token, origin)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from bots.service import Service
from engine.worker.runner import PipelineRunner
from tests.support import make_settings, rig_conversation_options

BLOCKED_PROMPT = "explicit porn of two adults"
HELD_PROMPT = "Elmo holding a bloody knife"
TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def playground_settings(tmp_path: Path, model_dir: Path, **limits: Any) -> Any:
    base = make_settings(tmp_path, model_dir, base_size=64, steps=2)
    return replace(
        base,
        moderation=replace(base.moderation, embedding=False, image_screening=False),
        limits=replace(base.limits, **({"burst": 2, "max_queued_per_user": 5} | limits)),
    )


@asynccontextmanager
async def running_service(
    settings: Any, runner_factory: Callable[[], PipelineRunner] | None = None
) -> AsyncIterator[Service]:
    service = Service(
        settings, adapters=[], runner_factory=runner_factory, conversation_options=rig_conversation_options()
    )
    try:
        await service.start()
        yield service
    finally:
        await service.close()


class Visitor:
    """One browser session: its own cookies; posts carry its CSRF token and the site's origin, as a page's do."""

    def __init__(self, base_url: str, cookies: aiohttp.CookieJar | None = None) -> None:
        """`cookies`: another visitor's, to be the same browser again (after a restart)."""
        self.base_url = base_url
        self.http = aiohttp.ClientSession(base_url, cookie_jar=cookies or aiohttp.CookieJar(unsafe=True))
        self.token = ""

    async def __aenter__(self) -> Visitor:
        await self.page("/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    @property
    def cookies(self) -> aiohttp.CookieJar:
        jar = self.http.cookie_jar
        assert isinstance(jar, aiohttp.CookieJar)
        return jar

    async def page(self, path: str) -> tuple[int, str]:
        async with self.http.get(path, allow_redirects=False) as response:
            text = await response.text()
        found = TOKEN.search(text)
        if found:
            self.token = found.group(1)
        return response.status, html.unescape(text)  # as a person reads it: &#39; is an apostrophe

    async def post(self, path: str, form: dict[str, str], **headers: str) -> tuple[int, str, str]:
        """(status, body, Location)."""
        fields = {"csrf_token": self.token} | form
        sent = {"Origin": self.base_url} | headers
        async with self.http.post(path, data=fields, headers=sent, allow_redirects=False) as response:
            return response.status, html.unescape(await response.text()), response.headers.get("Location", "")

    async def imagine(self, prompt: str, **fields: str) -> tuple[int, str, str]:
        return await self.post("/imagine", {"prompt": prompt} | fields)

    async def imagine_from(
        self, prompt: str, data: bytes, filename: str = "photo.jpg", content_type: str = "image/jpeg", **fields: str
    ) -> tuple[int, str, str]:
        """/imagine with an uploaded picture, as the page's form sends it (multipart)."""
        form = aiohttp.FormData({"csrf_token": self.token, "prompt": prompt} | fields)
        form.add_field("image", data, filename=filename, content_type=content_type)
        headers = {"Origin": self.base_url}
        async with self.http.post("/imagine", data=form, headers=headers, allow_redirects=False) as response:
            return response.status, html.unescape(await response.text()), response.headers.get("Location", "")

    async def get_bytes(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        async with self.http.get(path, allow_redirects=False) as response:
            return response.status, await response.read(), dict(response.headers)


def base_url(service: Service) -> str:
    assert service.web is not None and service.web.port
    return f"http://127.0.0.1:{service.web.port}"
