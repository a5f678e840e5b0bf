"""Fetching a user's file from a chat platform's own file host: only from allowed origins, within a time limit, and
never more than a byte cap, which is enforced while the body streams in (the download is cut off past it).

    data = await download(url, allowed_origins=("https://cdn.discordapp.com",), max_bytes=10_000_000,
                          timeout_s=20.0, headers={"Authorization": "Bearer xoxb-…"})

Redirects are not followed: a redirect could lead to another host, and would carry the bearer token there.
Every refusal is a `DownloadRefused` whose message is fit for the user (no URL, no token, no exception name).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import aiohttp
import yarl

from bots import messages

log = logging.getLogger(__name__)
CHUNK_BYTES = 64 * 1024


class DownloadRefused(Exception):
    """The file was not fetched, or not all of it; the message says why, for the user."""


class DownloadTooLarge(DownloadRefused):
    """The file is larger than the cap (declared so, or found so while streaming: the rest was not read)."""


def allowed(url: str, origins: Iterable[str]) -> bool:
    """Whether `url` is on one of `origins` (scheme://host[:port], compared exactly: no subdomains)."""
    try:
        target = yarl.URL(url)
    except (TypeError, ValueError):
        return False
    if not target.absolute or target.scheme not in ("http", "https") or target.user or target.password:
        return False
    return any(_origin(target) == _origin(yarl.URL(origin)) for origin in origins)


def _origin(url: yarl.URL) -> tuple[str, str, int | None]:
    return url.scheme.lower(), (url.host or "").lower().rstrip("."), url.port


async def download(
    url: str,
    *,
    allowed_origins: Iterable[str],
    max_bytes: int,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The file's bytes. Raises DownloadRefused for a host that is not allowed, a failed or slow download, or a
    file larger than `max_bytes` (declared or streamed)."""
    if not allowed(url, allowed_origins):
        log.warning("refused to download from a host that is not allowed: %.200s", yarl.URL(url).host if url else "")
        raise DownloadRefused(messages.IMAGE_HOST_NOT_ALLOWED)
    too_large = DownloadTooLarge(f"larger than {max_bytes} bytes")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.get(url, headers=dict(headers or {}), allow_redirects=False) as response,
        ):
            if response.status != 200:
                log.warning("file download answered HTTP %d", response.status)
                raise DownloadRefused(messages.IMAGE_DOWNLOAD_FAILED)
            if response.content_length is not None and response.content_length > max_bytes:
                raise too_large
            return await _read_capped(response, max_bytes, too_large)
    except TimeoutError:
        log.warning("file download took longer than %g s", timeout_s)
        raise DownloadRefused(messages.IMAGE_DOWNLOAD_SLOW) from None
    except aiohttp.ClientError as exc:
        log.warning("file download failed: %s", type(exc).__name__)
        raise DownloadRefused(messages.IMAGE_DOWNLOAD_FAILED) from None


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int, too_large: DownloadRefused) -> bytes:
    """The body, chunk by chunk; past `max_bytes` stop reading (leaving the block closes the connection)."""
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        received += len(chunk)
        if received > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
