"""A load generator's HTTP/1.1 client that costs next to nothing per request, for bench/slack_ack.py.

    posts = [RawPost.build(url, body, headers) for ...]     # serialised before the clock starts
    results = await asyncio.gather(*(post.send() for post in posts))    # (latency ms, status) each

Why not aiohttp's client: its Python work per request (building the request, its connector, the response
object) is about as much as the server's, all in the load generator's one thread. With 500 requests sent at once
the first one reached the server 50-260 ms after the clock started, by an amount that changed by up to 200 ms
from one round to the next (timestamps taken in both processes: `time.perf_counter` is the system's monotonic
clock): that spread, not the server, decided the ratios. Here each request is a connection of its own (as
before), the bytes are built beforehand, and the response is read as far as its body: what is timed is the
server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RawPost:
    host: str
    port: int
    request: bytes

    @classmethod
    def build(cls, url: str, body: bytes, headers: dict[str, str]) -> RawPost:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"a URL with host and port is needed, not {url!r}")
        lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return cls(parts.hostname, parts.port, head + body)

    async def send(self) -> tuple[float, int]:
        """Connect, send, read the whole response; (ms from before the connect to the end of the body, status)."""
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(self.request)
            status_line = await reader.readline()
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(_content_length(head))
            elapsed_ms = (time.perf_counter() - started) * 1000
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return elapsed_ms, int(status_line.split()[1])


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("a response without Content-Length")
