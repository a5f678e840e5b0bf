"""The stand-in Discord's gateway v10: HELLO, heartbeats, IDENTIFY -> READY (+ GUILD_CREATE), RESUME -> missed
events replayed then RESUMED, op 7 RECONNECT and server-side closes, zlib-stream compression."""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME, OP_RECONNECT = 0, 1, 2, 6, 7
OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 9, 10, 11
CLOSE_AUTHENTICATION_FAILED = 4004

Welcome = Callable[[str], list[tuple[str, dict[str, Any]]]]
"""Given a new session id, the events that open it: READY, then GUILD_CREATE for each guild."""


class Connection:
    """One gateway websocket; with compress=zlib-stream every message is one Z_SYNC_FLUSHed chunk of a single
    zlib stream that lives as long as the connection."""

    def __init__(self, ws: web.WebSocketResponse, compress: bool, path: str) -> None:
        self.ws = ws
        self.path = path
        self._compressor = zlib.compressobj() if compress else None
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any], on_send: Callable[[], None] | None = None) -> None:
        text = json.dumps(message)
        async with self._lock:
            if self.ws.closed:
                return
            if on_send is not None:
                on_send()
            if self._compressor is None:
                await self.ws.send_str(text)
            else:
                data = self._compressor.compress(text.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)


@dataclass
class Session:
    session_id: str
    seq: int = 0
    backlog: list[dict[str, Any]] = field(default_factory=list)
    connection: Connection | None = None


class Gateway:
    def __init__(self, token: str, heartbeat_interval_ms: int, welcome: Welcome, notify: Callable[[], None]) -> None:
        self._token = token
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._welcome = welcome
        self._notify = notify
        self.log: list[tuple[str, Any]] = []
        self._sessions: list[Session] = []
        self._session: Session | None = None
        """The session events go to: the latest to identify, or the one `select_session` chose."""
        self._connections: list[Connection] = []

    # ---- what tests look at and do -------------------------------------------------------------------------

    @property
    def identify_count(self) -> int:
        return sum(1 for kind, _ in self.log if kind == "identify")

    @property
    def resume_count(self) -> int:
        return sum(1 for kind, _ in self.log if kind == "resumed")

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def ready(self) -> bool:
        return self._session is not None and self._session.connection is not None

    def select_session(self, index: int) -> None:
        """With several bots connected (a benchmark), send events to the `index`-th to identify."""
        self._session = self._sessions[index]

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        session: Session | None = None,
        on_send: Callable[[], None] | None = None,
    ) -> None:
        """Send a DISPATCH to a session (default: the current one); kept in its backlog for a RESUME. `on_send`
        runs just before the frame is written."""
        session = session or self._session
        if session is None:
            raise AssertionError("no gateway session: the bot has not identified yet")
        session.seq += 1
        message = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.backlog.append(message)
        if session.connection is not None:
            await session.connection.send(message, on_send)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client must reconnect and RESUME."""
        await self._current_connection().send({"op": OP_RECONNECT, "d": None})

    async def drop_connection(self, code: int = 4000) -> None:
        """Close the socket from the server side with a resumable close code."""
        await self._current_connection().ws.close(code=code)

    async def close(self) -> None:
        for connection in list(self._connections):
            await connection.ws.close(code=1001)

    def _current_connection(self) -> Connection:
        if self._session is None or self._session.connection is None:
            raise AssertionError("no live gateway connection")
        return self._session.connection

    # ---- the websocket -------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        connection = Connection(ws, request.query.get("compress") == "zlib-stream", request.path)
        self._connections.append(connection)
        self.log.append(("connect", {"path": request.path, "query": dict(request.query)}))
        self._notify()
        try:
            await connection.send({"op": OP_HELLO, "d": {"heartbeat_interval": self._heartbeat_interval_ms}})
            async for frame in ws:
                if frame.type.name == "TEXT":
                    await self._on_message(connection, json.loads(frame.data))
        finally:
            self._connections.remove(connection)
            for session in self._sessions:
                if session.connection is connection:
                    session.connection = None
            self.log.append(("disconnect", {"code": ws.close_code}))
            self._notify()
        return ws

    async def _on_message(self, connection: Connection, message: dict[str, Any]) -> None:
        op, data = message.get("op"), message.get("d")
        if op == OP_HEARTBEAT:
            await connection.send({"op": OP_HEARTBEAT_ACK})
        elif op == OP_IDENTIFY:
            await self._identify(connection, data)
        elif op == OP_RESUME:
            await self._resume(connection, data)

    async def _identify(self, connection: Connection, data: dict[str, Any]) -> None:
        self.log.append(("identify", {k: v for k, v in data.items() if k != "token"}))
        if data.get("token") != self._token:
            await connection.ws.close(code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return
        session = Session(session_id=secrets.token_hex(16), connection=connection)
        self._sessions.append(session)
        self._session = session
        for event, payload in self._welcome(session.session_id):
            await self.dispatch(event, payload, session=session)
        self._notify()

    async def _resume(self, connection: Connection, data: dict[str, Any]) -> None:
        session = next((s for s in self._sessions if s.session_id == data.get("session_id")), None)
        if session is None or data.get("token") != self._token:
            self.log.append(("invalid_session", None))
            await connection.send({"op": OP_INVALID_SESSION, "d": False})
            return
        session.connection = connection
        last_seen = int(data.get("seq") or 0)
        for message in session.backlog:
            if message["s"] > last_seen:
                await connection.send(message)
        await self.dispatch("RESUMED", {}, session=session)
        self.log.append(("resumed", {"from_seq": last_seen, "path": connection.path}))
        self._notify()
