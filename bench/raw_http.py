"""A load generator's HTTP/1.1 client that costs next to nothing per request, for bench/slack_ack.py: h11 (the
sans-IO HTTP/1.1 library) on asyncio streams, one connection per request.

    posts = [RawPost.build(url, body, headers) for ...]     # serialised before the clock starts
    results = await asyncio.gather(*(post.send() for post in posts))    # (latency ms, status) each

Why not aiohttp's client: its Python work per request (building the request, its connector, the response
object) is about as much as the server's, all in the load generator's one thread. With 500 requests sent at once
the first one reached the server 50-260 ms after the clock started, by an amount that changed by up to 200 ms
from one round to the next (timestamps taken in both processes: `time.perf_counter` is the system's monotonic
clock): that spread, not the server, decided the ratios. Here each request is a connection of its own (as
before), its bytes are built beforehand, and the response is read as far as its body: what is timed is the
server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

READ_SIZE = 65536


@dataclass
class RawPost:
    """One request, sent once: its h11 connection has the request written and reads the response."""

    host: str
    port: int
    request: bytes
    connection: h11.Connection

    @classmethod
    def build(cls, url: str, body: bytes, headers: dict[str, str]) -> RawPost:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"a URL with host and port is needed, not {url!r}")
        fields = [("Host", parts.netloc), ("Content-Length", str(len(body))), *headers.items()]
        connection = h11.Connection(h11.CLIENT)
        events = (h11.Request(method="POST", target=parts.path or "/", headers=fields), h11.Data(data=body))
        request = b"".join(connection.send(event) or b"" for event in (*events, h11.EndOfMessage()))
        return cls(parts.hostname, parts.port, request, connection)

    async def send(self) -> tuple[float, int]:
        """Connect, send, read the whole response; (ms from before the connect to the end of the body, status)."""
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(self.request)
            status = await self._read_response(reader)
            elapsed_ms = (time.perf_counter() - started) * 1000
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return elapsed_ms, status

    async def _read_response(self, reader: asyncio.StreamReader) -> int:
        """Read the response to its end; its status code."""
        status = 0
        while True:
            event = self.connection.next_event()
            if event is h11.NEED_DATA:
                self.connection.receive_data(await reader.read(READ_SIZE))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status
