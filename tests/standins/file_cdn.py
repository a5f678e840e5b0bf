"""A stand-in for the platforms' file hosts on 127.0.0.1: Discord's attachment CDN (cdn.discordapp.com,
`/attachments/<channel>/<id>/<name>`, public signed URLs) and Slack's private files (files.slack.com,
`/files-pri/<team>-<file>/download/<name>`, fetched with the bot token as a Bearer).

A test puts files here (`add`, or `add_stream` for a body streamed in chunks without a length, as large as it
likes without holding it in memory) and reads back what was asked for (`requests`) and how much of each body was
actually sent before the client hung up (`sent_bytes`, `finished`): that is how a test sees that a download was cut
off while streaming rather than read to the end.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from aiohttp import web

STREAM_CHUNK = 256 * 1024


@dataclass
class _File:
    data: bytes = b""
    content_type: str = "application/octet-stream"
    token: str | None = None
    """Slack's files answer only with `Authorization: Bearer <token>`."""
    stream_bytes: int = 0
    """A streamed body of this many zero bytes (no Content-Length), instead of `data`."""


@dataclass(frozen=True)
class CdnRequest:
    path: str
    authorization: str


@dataclass
class FileCDN:
    files: dict[str, _File] = field(default_factory=dict)
    requests: list[CdnRequest] = field(default_factory=list)
    sent_bytes: dict[str, int] = field(default_factory=dict)
    finished: dict[str, bool] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> FileCDN:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._serve)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def discord_path(self, filename: str) -> str:
        return f"/attachments/{secrets.randbelow(10**18)}/{secrets.randbelow(10**18)}/{filename}"

    def slack_path(self, filename: str) -> str:
        return f"/files-pri/T1-F{secrets.token_hex(5).upper()}/download/{filename}"

    def add(self, path: str, data: bytes, content_type: str = "image/png", token: str | None = None) -> str:
        """Serve `data` at `path`; its URL (signed like Discord's, which the bot must keep whole)."""
        self.files[path] = _File(data=data, content_type=content_type, token=token)
        return f"{self.origin}{path}?ex=67&is=66&hm={secrets.token_hex(8)}&"

    def add_stream(self, path: str, total_bytes: int, content_type: str = "image/png") -> str:
        """Serve `total_bytes` of zeros in chunks with no Content-Length: only counting can tell the size."""
        self.files[path] = _File(content_type=content_type, stream_bytes=total_bytes)
        return f"{self.origin}{path}"

    def asked_for(self, path: str) -> int:
        return sum(1 for request in self.requests if request.path == path)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append(CdnRequest(path, request.headers.get("Authorization", "")))
        stored = self.files.get(path)
        if stored is None:
            return web.Response(status=404, text="not found")
        if stored.token is not None and request.headers.get("Authorization") != f"Bearer {stored.token}":
            return web.Response(status=302, headers={"Location": "https://slack.com/signin"})  # as Slack does
        if not stored.stream_bytes:
            self.sent_bytes[path], self.finished[path] = len(stored.data), True
            return web.Response(body=stored.data, content_type=stored.content_type)
        return await self._stream(request, path, stored)

    async def _stream(self, request: web.Request, path: str, stored: _File) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": stored.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.sent_bytes[path], self.finished[path] = 0, False
        chunk = b"\0" * STREAM_CHUNK
        try:
            while self.sent_bytes[path] < stored.stream_bytes:
                size = min(STREAM_CHUNK, stored.stream_bytes - self.sent_bytes[path])
                await response.write(chunk[:size])
                self.sent_bytes[path] += size
            await response.write_eof()
            self.finished[path] = True
        except (ConnectionResetError, ConnectionError):
            pass  # the client hung up: what it did not take was never sent
        return response
