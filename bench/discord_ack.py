"""Discord ack latency: from the INTERACTION_CREATE frame leaving the gateway to the defer callback arriving,
when 200 `/imagine` commands arrive at once.

    .venv/bin/python bench/discord_ack.py                      # 200 commands at once, 3 rounds per variant
    .venv/bin/python bench/discord_ack.py --commands 50 --rounds 1

Two bots connected to the same stand-in Discord (zlib-compressed gateway, REST), measured in alternating rounds:
  bare discord.py  a discord.Client whose /imagine only calls interaction.response.defer()
  imagine          the Discord adapter as `imagine serve` runs it: store, defer, then the conversation layer
                   (admission with the embedding model, the job journaled in SQLite, status edits), while the
                   engine (tiny model) renders the queued jobs in the background
The stand-in runs in a child process (Discord is another machine), so the bots' event loop only serves the bots.
Each command comes from a distinct user; the server-wide prompt limit is raised so that all are admitted.
Latency is measured by the stand-in: frame written to the socket -> callback request received. Discord allows 3 s.
After each imagine round the bench also waits until every user sees their status line (or a refusal), reports
that time too, and so starts the next round from a quiet bot.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import discord  # noqa: E402
import yarl  # noqa: E402
from discord import app_commands  # noqa: E402

from bench.ack_report import print_ack_table  # noqa: E402
from bench.child_process import Child, percentile  # noqa: E402
from bench.quiet import engine_quiet  # noqa: E402
from bots.discord.adapter import DiscordAdapter  # noqa: E402
from bots.process_tuning import tune_for_serving  # noqa: E402
from bots.service import Service  # noqa: E402
from config.settings import Settings, load_settings  # noqa: E402

ACK_WAIT_S = 60.0
ANSWER_WAIT_S = 600.0
VARIANTS = ("bare discord.py", "imagine")  # connected in this order: session 0 and session 1 at the stand-in


# ---- the child process: the stand-in Discord and the load generator ------------------------------------------


async def stand_in_discord() -> None:
    from tests.standins.discord_server import DiscordStandIn

    async with DiscordStandIn(ack_deadline_s=None) as standin:
        print(
            json.dumps({"api_base": standin.api_base, "gateway_url": standin.gateway_url, "token": standin.token}),
            flush=True,
        )
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            order = json.loads(line)
            if order.get("quit"):
                return
            if "wait_sessions" in order:
                wanted = int(order["wait_sessions"])
                await standin.wait_until(lambda: standin.gateway.session_count >= wanted, 120)  # noqa: B023
                print(json.dumps({"ok": True}), flush=True)
                continue
            print(json.dumps(await fire(standin, order)), flush=True)


async def fire(standin: Any, order: dict[str, Any]) -> dict[str, Any]:
    """Dispatch `count` /imagine commands at once to one bot's session; wait for every defer callback."""
    standin.gateway.select_session(order["session"])
    per_user = int(order.get("per_user", 1))  # commands each user sends, one after another (bench/load.py: 10)
    users = [standin.make_user(f"{order['prefix']}{i:04d}") for i in range(-(-order["count"] // per_user))]
    records = await asyncio.gather(
        *(
            standin.send_command(users[i // per_user], {"prompt": f"a lighthouse at dawn, take {i}"})
            for i in range(order["count"])
        )
    )
    try:
        await standin.wait_until(lambda: all(r.acked_at is not None for r in records), ACK_WAIT_S)
    except AssertionError:
        pass  # reported as unacknowledged
    latencies = [r.ack_latency_s * 1000 for r in records if r.ack_latency_s is not None]
    answers = await wait_for_answers(standin, records) if order.get("answers") else []
    return {
        "latencies_ms": latencies,
        "unacked": sum(r.acked_at is None for r in records),
        "deferred": sum(r.callback_type == 5 for r in records),
        "answers_ms": answers,
    }


async def wait_for_answers(standin: Any, records: list[Any]) -> list[float]:
    """Until every user sees where they stand: the "thinking" message edited into a status line (queued,
    position N) or replaced by a private refusal. So that the next round starts from a quiet bot."""
    answered_at: dict[str, float] = {}

    def all_answered() -> bool:
        for record in records:
            if record.token not in answered_at and record.original_message_id:
                original = standin.messages[record.original_message_id]
                if original.deleted or not original.loading:
                    answered_at[record.token] = time.perf_counter()
        return len(answered_at) == len(records)

    try:
        await standin.wait_until(all_answered, ANSWER_WAIT_S)
    except AssertionError:
        pass
    return [(answered_at[r.token] - r.sent_at) * 1000 for r in records if r.token in answered_at]


# ---- the bot process -----------------------------------------------------------------------------------------


class BareDiscordPy:
    """The baseline: discord.py dispatching /imagine to a handler that only defers."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.client = discord.Client(intents=discord.Intents(guilds=True, dm_messages=True), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self.client)
        self._gateway: asyncio.Task[None] | None = None

        @self.tree.command(name="imagine", description="defer only")
        async def imagine(interaction: discord.Interaction[Any], prompt: str) -> None:
            await interaction.response.defer()

    async def start(self) -> None:
        await self.client.login(self.token)
        self._gateway = asyncio.create_task(self.client.connect(), name="bare-gateway")
        await self.client.wait_until_ready()

    async def close(self) -> None:
        await self.client.close()
        if self._gateway is not None:
            await self._gateway


def bench_settings(workdir: Path, discord_info: dict[str, str], args: argparse.Namespace) -> Settings:
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
        moderation=replace(base.moderation, embedding=not args.rules_only),
        discord=replace(
            base.discord,
            token=discord_info["token"],
            api_base=discord_info["api_base"],
            gateway_url=discord_info["gateway_url"],
        ),
    )


Measured = tuple[dict[str, list[float]], dict[str, int], list[float]]
"""Ack latencies (ms) by variant, unacknowledged commands by variant, imagine's status-shown times (ms)."""


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="discord-ack-") as tmp:
        latencies, unacked, answers = await measure(args, lambda info: bench_settings(Path(tmp), info, args))
    report(latencies, unacked, answers, args)


async def measure(
    args: argparse.Namespace, settings: Callable[[dict[str, str]], Settings], *, per_user: int = 1
) -> Measured:
    """Both variants against one stand-in Discord in a child process: `args.rounds` alternating rounds of
    `args.commands` commands at once (`per_user` from each user). `settings(stand-in info)` builds the
    service's settings."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--stand-in",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=2**24,
    )
    assert process.stdout is not None
    info = json.loads(await process.stdout.readline())
    child = Child(process)
    # Both bots talk to the same stand-in; the adapter points discord.py there too (and puts this back on close).
    discord.http.Route.BASE = info["api_base"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(info["gateway_url"])
    latencies: dict[str, list[float]] = {name: [] for name in VARIANTS}
    answers: list[float] = []
    unacked = dict.fromkeys(VARIANTS, 0)
    bare = BareDiscordPy(info["token"])
    service = Service(settings(info), adapters=[partial(DiscordAdapter, guild_ready_timeout=0.05)])
    try:
        await bare.start()
        await child.ask({"wait_sessions": 1})
        await service.start()
        tune_for_serving()  # as `imagine serve` does
        await child.ask({"wait_sessions": 2})
        # Warm up with a full-size batch per variant, not measured: discord.py's HTTP client opens a connection
        # per defer sent at once and keeps it, so the first batch of each bot was also the one that opened them
        # (p99 600-690 ms where later rounds took 175-340) and decided the pooled p99 on its own.
        for session in range(len(VARIANTS)):
            warm_up = {"session": session, "count": args.commands, "per_user": per_user, "prefix": f"w{session}-"}
            await child.ask(warm_up | {"answers": session == 1})
        await engine_quiet(service)
        for round_number in range(args.rounds):
            # Alternate which variant goes first (neither is always the one right after the other's round);
            # each starts from a quiet bot: the previous imagine round admitted, drawn and delivered. (Rendering
            # meanwhile took the CPU from whichever round came next: ratios from 1.05 to 1.73 between runs.)
            order = list(enumerate(VARIANTS))
            for session, name in order if round_number % 2 == 0 else reversed(order):
                result = await child.ask(
                    {
                        "session": session,
                        "count": args.commands,
                        "per_user": per_user,
                        "prefix": f"r{round_number}-{session}-",
                        "answers": name == "imagine",
                    }
                )
                if name == "imagine":
                    await engine_quiet(service)
                latencies[name] += result["latencies_ms"]
                answers += result["answers_ms"]
                unacked[name] += result["unacked"]
                print(
                    f"round {round_number + 1} {name}: {len(result['latencies_ms'])} defers, "
                    f"{result['unacked']} unacknowledged",
                    file=sys.stderr,
                )
    finally:
        await service.close()  # before the stand-in goes: deliveries in flight end cleanly
        await bare.close()
        await child.quit()
    return latencies, unacked, answers


def report(
    latencies: dict[str, list[float]], unacked: dict[str, int], answers: list[float], args: argparse.Namespace
) -> None:
    print(
        f"Discord ack latency: {args.commands} /imagine INTERACTION_CREATEs at once, {args.rounds} rounds per "
        f"variant ({len(latencies['imagine'])} defers each), engine {args.size}² in the background, "
        f"moderation {'rules only' if args.rules_only else 'rules + embedding model'}"
    )
    fields = print_ack_table(
        latencies, unacked, bare="bare discord.py", miss_label="unacked", platform="Discord", acks="defers"
    )
    print(
        f"  imagine status shown (queued, position N): p50 {percentile(answers, 0.5):.0f} ms, "
        f"p99 {percentile(answers, 0.99):.0f} ms, {len(answers)} of {len(latencies['imagine'])}"
    )
    print(
        json.dumps(
            {
                "commands_at_once": args.commands,
                "rounds": args.rounds,
                "rules_only": args.rules_only,
                **fields,
                "unacked": unacked["imagine"] + unacked["bare discord.py"],
                "imagine_status_p50_ms": round(percentile(answers, 0.5), 1),
                "imagine_status_p99_ms": round(percentile(answers, 0.99), 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=200, help="commands dispatched at once (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant (default 3)")
    parser.add_argument("--size", type=int, default=256, help="image side the engine renders meanwhile")
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument(
        "--rules-only",
        action="store_true",
        help="prompt moderation without the embedding model (to see what the model costs)",
    )
    parser.add_argument("--stand-in", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stand_in:
        asyncio.run(stand_in_discord())
    else:
        started = time.perf_counter()
        asyncio.run(run(args))
        print(f"(bench took {time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
