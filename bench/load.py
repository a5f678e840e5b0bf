"""Load (issue 17.2): 50 users × 10 `/imagine` commands at once through each platform stand-in, in one run; ack
latency of the service against the bare library doing only the ack, and the bot process's peak memory.

    .venv/bin/python bench/load.py                       # 50 users × 10 commands, 3 rounds per variant
    .venv/bin/python bench/load.py --rounds 1 --rules-only

Per platform, the two variants of its ack benchmark in alternating rounds (bench/discord_ack.py: discord.py that
only defers vs the Discord adapter; bench/slack_ack.py: bolt that only acks vs the Slack adapter), each round
sending every user's commands one after another, all users at once. The service runs with its default limits
(most of a user's 10 prompts are refused: after the ack), its default queue, the tiny model at `--size`, the
server-wide prompt limit raised (every user is in one server). Latency is measured in the stand-in's process:
Discord from the INTERACTION_CREATE frame to the defer callback, Slack from the POST to its HTTP 200.
Prints a table per platform (ratio row: imagine / bare; goal p99 ≤ 1.5), peak RSS, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import discord_ack, slack_ack  # noqa: E402
from bench.ack_report import print_ack_table  # noqa: E402
from config.settings import Settings, load_settings  # noqa: E402

GOAL_P99_RATIO = 1.5


def under_load(settings: Settings, args: argparse.Namespace) -> Settings:
    """What the ack benches run, with the default limits and queue back: this bench is about real load."""
    defaults = load_settings(env={})
    return replace(
        settings,
        engine=replace(settings.engine, queue_size=defaults.engine.queue_size),
        limits=replace(defaults.limits, server_prompts_per_window=1_000_000),
        moderation=replace(settings.moderation, embedding=not args.rules_only),
    )


def platform_args(args: argparse.Namespace) -> argparse.Namespace:
    """The ack benches' arguments for this load (both read commands/requests, rounds, size, model)."""
    total = args.users * args.commands
    return argparse.Namespace(
        commands=total, requests=total, rounds=args.rounds, size=args.size, model=args.model, rules_only=args.rules_only
    )


async def discord_load(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, list[float]], dict[str, int]]:
    bench_args = platform_args(args)

    def settings(info: dict[str, str]) -> Settings:
        return under_load(discord_ack.bench_settings(workdir, info, bench_args), args)

    latencies, unacked, _ = await discord_ack.measure(bench_args, settings, per_user=args.commands)
    return {"bare": latencies["bare discord.py"], "imagine": latencies["imagine"]}, {
        "bare": unacked["bare discord.py"],
        "imagine": unacked["imagine"],
    }


async def slack_load(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, list[float]], dict[str, int]]:
    bench_args = platform_args(args)

    def settings(api_url: str, bot_token: str) -> Settings:
        return under_load(slack_ack.bench_settings(workdir, api_url, bot_token, bench_args), args)

    latencies, failures, _ = await slack_ack.measure(bench_args, settings, per_user=args.commands)
    return {"bare": latencies["bare bolt"], "imagine": latencies["imagine"]}, {
        "bare": failures["bare bolt"],
        "imagine": failures["imagine"],
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"users": args.users, "commands_per_user": args.commands, "rounds": args.rounds}
    platforms = {"discord": (discord_load, "Discord", "unacked"), "slack": (slack_load, "Slack", "non-200")}
    for key, (measure, name, miss_label) in platforms.items():
        with tempfile.TemporaryDirectory(prefix=f"load-{key}-") as tmp:
            latencies, misses = await measure(args, Path(tmp))
        print(
            f"{name}: {args.users} users × {args.commands} /imagine at once, {args.rounds} rounds per variant "
            f"({len(latencies['imagine'])} acks each)"
        )
        fields = print_ack_table(latencies, misses, bare="bare", miss_label=miss_label, platform=name, acks="acks")
        results[key] = {**fields, "misses": misses["imagine"] + misses["bare"]}
        results[key]["peak_rss_mib_so_far"] = round(peak_rss_mib())
    results["peak_rss_mib"] = round(peak_rss_mib())
    results["goal_p99_ratio"] = GOAL_P99_RATIO
    results["goal_met"] = all(results[key]["p99_ratio"] <= GOAL_P99_RATIO for key in platforms)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--commands", type=int, default=10, help="commands per user (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant and platform (default 3)")
    parser.add_argument("--size", type=int, default=64, help="image side the engine renders meanwhile")
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--rules-only", action="store_true", help="prompt moderation without the embedding model")
    args = parser.parse_args()
    started = time.perf_counter()
    results = asyncio.run(run(args))
    print(f"bot process peak RSS: {results['peak_rss_mib']} MiB (both platforms, both variants, the engine)")
    print(f"(bench took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
