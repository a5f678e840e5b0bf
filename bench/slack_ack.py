"""Slack ack latency: how long Slack waits for the HTTP 200 when 200 `/imagine` slash commands arrive at once.

    .venv/bin/python bench/slack_ack.py                      # 200 commands at once, 3 rounds per variant
    .venv/bin/python bench/slack_ack.py --requests 50 --rounds 1

Two variants, measured in alternating rounds against the same stand-in Slack:
  bare bolt   a slack-bolt AsyncApp whose /imagine listener only calls ack(): signature check and dispatch
  imagine     the Slack adapter's path before its ack: signature checks, bolt dispatch, the request stored in
              the durable intake (SQLite); admission, the job and the status message follow after the ack
The load generator and the stand-in Slack Web API run in a child process (Slack is another machine), so the
server's event loop only serves the app. Latency is from just before each signed POST (a connection of its own,
as Slack opens) to its HTTP 200, sent by a client that costs next to nothing per request (bench/raw_http.py).
Admission and the engine (tiny model) work through each imagine batch in the background while the rest of the
batch is still being acknowledged, as in production; before the next batch of either variant the service is
left to finish everything (admitted, drawn, delivered), so both variants start from the same quiet state.
The server-wide prompt limit is raised so that every command is admitted (each batch uses distinct users).
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request  # noqa: E402
from slack_bolt.async_app import AsyncApp  # noqa: E402
from slack_sdk.web.async_client import AsyncWebClient  # noqa: E402

from bench.ack_report import print_ack_table  # noqa: E402
from bench.child_process import Child  # noqa: E402
from bench.quiet import engine_quiet  # noqa: E402
from bench.raw_http import RawPost  # noqa: E402
from bots.process_tuning import LISTEN_BACKLOG, tune_for_serving  # noqa: E402
from bots.service import Service  # noqa: E402
from bots.slack.adapter import EVENTS_PATH, SlackAdapter  # noqa: E402
from config.settings import Settings, load_settings  # noqa: E402

SIGNING_SECRET = "bench-signing-secret"


# ---- the child process: stand-in Slack and the load generator ------------------------------------------------


async def load_generator() -> None:
    from tests.standins.slack_requests import SlackSender
    from tests.standins.slack_server import SlackStandIn

    async with SlackStandIn() as standin:
        print(json.dumps({"api_url": standin.api_url, "bot_token": standin.bot_token}), flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            order = json.loads(line)
            if order.get("quit"):
                return
            result = await fire(standin, SlackSender(order["url"], SIGNING_SECRET, standin), order)
            print(json.dumps(result), flush=True)


async def fire(standin: Any, sender: Any, order: dict[str, Any]) -> dict[str, Any]:
    """Post `count` signed slash commands at once; return each one's latency to its response."""
    per_user = int(order.get("per_user", 1))  # commands each user sends, one after another (bench/load.py: 10)
    requests = [
        sender.slash_command(
            f"a lighthouse at dawn, take {i}",
            user_id=f"U{order['prefix']}{i // per_user:04d}",
            channel_id=f"CBENCH{i % 20:02d}",
        )
        for i in range(order["count"])
    ]
    posts = [RawPost.build(sender.endpoint, request.body, request.headers) for request in requests]
    calls_before = len(standin.calls)
    results = await asyncio.gather(*(post.send() for post in posts))
    return {
        "latencies_ms": [ms for ms, _ in results],
        "statuses": [status for _, status in results],
        "web_api_calls": len(standin.calls) - calls_before,
    }


# ---- the server process: the two apps ------------------------------------------------------------------------


class BareBolt:
    """The baseline: bolt verifying and dispatching a slash command to a listener that only acks."""

    def __init__(self, api_url: str, bot_token: str) -> None:
        self.client = AsyncWebClient(token=bot_token, base_url=api_url)
        self.app = AsyncApp(client=self.client, signing_secret=SIGNING_SECRET, process_before_response=True)
        self.app.command("/imagine")(self._ack)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @staticmethod
    async def _ack(ack: Any) -> None:
        await ack()

    async def _handle(self, request: web.Request) -> web.Response:
        return await to_aiohttp_response(await self.app.async_dispatch(await to_bolt_request(request)))

    async def start(self) -> None:
        self.client.session = aiohttp.ClientSession()
        web_app = web.Application()
        web_app.add_routes([web.post(EVENTS_PATH, self._handle)])
        self._runner = web.AppRunner(web_app, handle_signals=False, access_log=None)
        await self._runner.setup()
        # The adapter's listen backlog: otherwise a burst overflows aiohttp's default and a dropped handshake
        # costs the baseline a second now and then (bots/process_tuning.py), which is not what is compared here.
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.client.session is not None:
            await self.client.session.close()


class ImagineService(Service):
    """The service as `imagine serve` runs it, with the Slack adapter; knows when it has gone quiet."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, adapters=[SlackAdapter])

    async def start_on_port(self) -> int:
        await self.start()
        tune_for_serving()  # as `imagine serve` does
        adapter = self.adapters[0]
        assert isinstance(adapter, SlackAdapter) and adapter.port is not None
        return adapter.port

    async def quiet(self) -> float:
        """Wait until every command so far is admitted, generated and delivered; seconds it took."""
        started = time.perf_counter()
        adapter = self.adapters[0]
        assert isinstance(adapter, SlackAdapter)
        await adapter.intake.settled()
        await engine_quiet(self)
        return time.perf_counter() - started


def bench_settings(workdir: Path, api_url: str, bot_token: str, args: argparse.Namespace) -> Settings:
    base = load_settings(env={})
    return replace(
        base,
        engine=replace(
            base.engine,
            model=args.model,
            base_size=args.size,
            steps=1,
            queue_size=100_000,
            output_dir=str(workdir / "images"),
        ),
        store=replace(base.store, url=f"sqlite:///{workdir}/imagine.db"),
        web=replace(base.web, port=0),
        limits=replace(base.limits, server_prompts_per_window=1_000_000, daily_quota=1_000_000),
        slack=replace(
            base.slack, bot_token=bot_token, signing_secret=SIGNING_SECRET, api_base=api_url, host="127.0.0.1", port=0
        ),
    )


Measured = tuple[dict[str, list[float]], dict[str, int], list[float]]
"""Ack latencies (ms) by variant, non-200 answers by variant, seconds each imagine batch took to drain."""


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="slack-ack-") as tmp:
        latencies, failures, drain_s = await measure(
            args, lambda api_url, bot_token: bench_settings(Path(tmp), api_url, bot_token, args)
        )
    report(latencies, failures, drain_s, args)


async def measure(args: argparse.Namespace, settings: Callable[[str, str], Settings], *, per_user: int = 1) -> Measured:
    """Both variants against one stand-in Slack and load generator in a child process: `args.rounds` rounds of
    `args.requests` slash commands at once (`per_user` from each user). `settings(api_url, bot_token)` builds
    the service's settings."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--load-generator",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=2**24,
    )
    assert process.stdout is not None
    slack = json.loads(await process.stdout.readline())
    child = Child(process)
    latencies: dict[str, list[float]] = {"bare bolt": [], "imagine": []}
    failures = {"bare bolt": 0, "imagine": 0}
    drain_s: list[float] = []
    bare = BareBolt(slack["api_url"], slack["bot_token"])
    service = ImagineService(settings(slack["api_url"], slack["bot_token"]))
    await bare.start()
    ports = {"bare bolt": bare.port, "imagine": await service.start_on_port()}
    try:
        # Warm up with a full-size batch per variant, not measured (bolt's lazy auth.test, the first jobs, the
        # caches of a batch that size), as bench/discord_ack.py does.
        for name, port in ports.items():
            warm_up = {"url": f"http://127.0.0.1:{port}{EVENTS_PATH}", "count": args.requests, "per_user": per_user}
            await child.ask(warm_up | {"prefix": f"W{name[0]}"})
        await service.quiet()
        for round_number in range(args.rounds):
            for name, port in ports.items():
                result = await child.ask(
                    {
                        "url": f"http://127.0.0.1:{port}{EVENTS_PATH}",
                        "count": args.requests,
                        "per_user": per_user,
                        "prefix": f"R{round_number}{name[0]}",
                    }
                )
                latencies[name] += result["latencies_ms"]
                failures[name] += sum(status != 200 for status in result["statuses"])
            # Every batch starts from a quiet service: the previous one fully admitted, drawn, delivered.
            drain_s.append(await service.quiet())
    finally:
        await service.close()  # before the stand-in goes: deliveries in flight end cleanly
        await bare.close()
        await child.quit()
    return latencies, failures, drain_s


def report(
    latencies: dict[str, list[float]], failures: dict[str, int], drain_s: list[float], args: argparse.Namespace
) -> None:
    print(
        f"Slack ack latency: {args.requests} signed /imagine slash commands at once, {args.rounds} rounds per "
        f"variant ({len(latencies['imagine'])} acks each), engine {args.size}² in the background"
    )
    fields = print_ack_table(latencies, failures, bare="bare bolt", miss_label="non-200", platform="Slack", acks="acks")
    print(
        f"  after each batch, all {args.requests} admitted, drawn and delivered in (median) "
        f"{statistics.median(drain_s):.1f} s"
    )
    print(
        json.dumps(
            {
                "requests_at_once": args.requests,
                "rounds": args.rounds,
                **fields,
                "non_200": failures["imagine"] + failures["bare bolt"],
                "batch_delivered_s": round(statistics.median(drain_s), 1),
                "image_size": args.size,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="slash commands sent at once (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant (default 3)")
    parser.add_argument("--size", type=int, default=64, help="image side the engine renders (default 64)")
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--load-generator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_generator:
        asyncio.run(load_generator())
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
