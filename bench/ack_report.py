"""What both chat acknowledgement benchmarks (discord_ack.py, slack_ack.py) print: latency per variant, imagine
against the bare library measured in the same run, and the share that met the platform's 3 s deadline."""

from __future__ import annotations

import statistics
from typing import Any

from bench.child_process import percentile

PLATFORM_DEADLINE_MS = 3000.0  # Discord and Slack both give up on an answer after 3 s


def print_ack_table(
    latencies: dict[str, list[float]], misses: dict[str, int], *, bare: str, miss_label: str, platform: str, acks: str
) -> dict[str, Any]:
    """Print the table (one row per variant, then the ratio row and the deadline share); return the JSON
    fields both benchmarks report."""
    stats = {
        name: {
            "p50": percentile(values, 0.50),
            "p99": percentile(values, 0.99),
            "max": max(values),
            "mean": statistics.fmean(values),
        }
        for name, values in latencies.items()
    }
    base, full = stats[bare], stats["imagine"]
    print(f"  {'variant':<24} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {miss_label:>8}")
    for name, values in stats.items():
        print(f"  {name:<24} {values['p50']:9.1f} {values['p99']:9.1f} {values['max']:9.1f} {misses[name]:8d}")
    print(f"  {'imagine / ' + bare:<24} {full['p50'] / base['p50']:9.2f} {full['p99'] / base['p99']:9.2f}")
    within = sum(ms < PLATFORM_DEADLINE_MS for ms in latencies["imagine"]) / max(1, len(latencies["imagine"]))
    print(f"  imagine {acks} within {platform}'s 3 s: {within:.1%}")
    return {
        "bare_p50_ms": round(base["p50"], 1),
        "bare_p99_ms": round(base["p99"], 1),
        "imagine_p50_ms": round(full["p50"], 1),
        "imagine_p99_ms": round(full["p99"], 1),
        "imagine_max_ms": round(full["max"], 1),
        "p50_ratio": round(full["p50"] / base["p50"], 3),
        "p99_ratio": round(full["p99"] / base["p99"], 3),
        "imagine_within_3s": round(within, 4),
    }
