"""Webhook requests that discord.py sends once, for posts that must not happen twice.

An interaction followup (POST /webhooks/{application}/{token}) cannot carry a nonce, so Discord cannot tell a
retry from a second post. discord.py's webhook adapter retries a 5xx answer by itself, up to five times: when
Discord created the message and only its answer was lost, every retry posts the images again. Inside
`single_try()`, this task's webhook requests go through `_SingleTryAdapter` instead, which hands a 5xx answer or
a connection lost mid-request straight back as `OutcomeUnknown`, so the caller can look whether the message
arrived before it posts again (bots/discord/replies.py). A 429 is still waited out and retried by discord.py: a
rate-limited request did not happen.

discord.py picks the adapter of every webhook request from the context variable `async_context`
(discord/webhook/async_.py); setting it here affects only the current task and what it awaits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import aiohttp
from discord.webhook.async_ import AsyncWebhookAdapter, async_context


class OutcomeUnknown(Exception):
    """A request's answer was lost (5xx, dropped connection, timeout): it may or may not have taken effect."""


@contextlib.contextmanager
def single_try() -> Iterator[None]:
    token = async_context.set(_SINGLE_TRY)
    try:
        yield
    finally:
        async_context.reset(token)


class _SingleTryAdapter(AsyncWebhookAdapter):
    async def request(self, route: Any, session: aiohttp.ClientSession, **options: Any) -> Any:
        return await super().request(route, _SingleTrySession(session), **options)  # type: ignore[arg-type]


class _SingleTrySession:
    """Enough of aiohttp.ClientSession for discord.py's adapter: `request()` as an async context manager."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def request(self, method: str, url: Any, **options: Any) -> _SingleTry:
        return _SingleTry(self._session.request(method, url, **options))


class _SingleTry:
    def __init__(self, request: Any) -> None:
        self._request = request

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._request.__aenter__()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # discord.py would retry some connection resets itself (errno 54/10054).
            raise OutcomeUnknown(f"the connection to Discord failed mid-request: {exc!r}") from exc
        if response.status >= 500:
            await self._request.__aexit__(None, None, None)
            raise OutcomeUnknown(f"Discord answered {response.status}")
        return response

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._request.__aexit__(kind, error, traceback)


_SINGLE_TRY = _SingleTryAdapter()
