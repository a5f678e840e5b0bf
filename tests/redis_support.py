"""The scale-out tests' helpers: a key prefix of their own on the shared Redis (deleted afterwards), a private
redis-server they may stop and restart, settings for frontends and workers, and waiting on conditions."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from config.settings import Settings
from tests.support import make_settings

REDIS_URL = os.environ.get("IMAGINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
"""The shared Redis on this machine; every test works under a prefix of its own and deletes it afterwards."""


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()  # type: ignore[misc]
    except (RedisError, OSError) as exc:
        await client.aclose()
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); set IMAGINE_TEST_REDIS")
    prefix = f"imagine-test-{secrets.token_hex(4)}"
    try:
        yield prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def scale_out_settings(
    tmp_path: Path, model_dir: Path, store_url: str, prefix: str, redis_url: str = REDIS_URL, **engine: Any
) -> Settings:
    """A small, fast engine in scale-out mode: short heartbeats (0.2 s; a job silent for 0.7 s is reclaimed: a
    margin for this crowded machine), the database at `store_url`."""
    base = make_settings(tmp_path, model_dir)
    options: dict[str, Any] = {
        "queue": "redis",
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "heartbeat_s": 0.2,
        "reclaim_after_heartbeats": 4,
        "max_batch_images": 8,
        **engine,
    }
    return replace(base, engine=replace(base.engine, **options), store=replace(base.store, url=store_url))


def frontend(settings: Settings, frontend_id: str) -> Settings:
    return replace(settings, engine=replace(settings.engine, frontend_id=frontend_id))


async def eventually(condition: Callable[[], bool], timeout_s: float = 120.0, what: str = "the condition") -> None:
    """Wait until `condition()` holds (checked every 20 ms); the timeout only stops a hung test."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come about within {timeout_s:g} s")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own (AOF with fsync on every write, as production should run it), which the
    test may kill and start again on the same port and data folder."""

    def __init__(self, folder: Path, password: str = "") -> None:
        self.folder = folder
        self.port = free_port()
        self.password = password
        """With one, clients must AUTH (`requirepass`); `url` carries it."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("no redis-server on PATH")
        self.folder.mkdir(parents=True, exist_ok=True)
        arguments = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        arguments += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"]
        if self.password:
            arguments += ["--requirepass", self.password]
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(arguments, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up (and, with a password, refusing)
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the private redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()
