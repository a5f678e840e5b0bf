"""A small server-rendered SVG chart: prompts held and blocked per day, stacked by category.

Two bars a day (held, then blocked), one colour per category, a legend and day labels; every segment carries a
<title> (hover text, and what a screen reader reads). Colours are SVG presentation attributes, not inline CSS, so
the page's Content-Security-Policy needs no `unsafe-inline`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from markupsafe import Markup, escape

from bots.web.mod.queries import DAY_S, DayCount

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
WIDTH, HEIGHT = 720, 240
TOP, BOTTOM, LEFT, LEGEND_W = 16, 40, 36, 160
KINDS = ("held", "blocked")


def holds_and_blocks_svg(counts: Sequence[DayCount], *, days: int, today: int | None = None) -> Markup:
    today = int(time.time() // DAY_S) if today is None else today
    first = today - days + 1
    categories = sorted({count.category for count in counts})
    colour = {category: PALETTE[index % len(PALETTE)] for index, category in enumerate(categories)}
    totals: dict[tuple[int, str], int] = {}
    for count in counts:
        totals[(count.day, count.kind)] = totals.get((count.day, count.kind), 0) + count.count
    peak = max(totals.values(), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - LEGEND_W, HEIGHT - TOP - BOTTOM
    slot = plot_w / days
    bar = max(2.0, slot * 0.38)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-labelledby="chart-title"><title id="chart-title">Prompts held and blocked per day, by category</title>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#888"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 10}" text-anchor="end" font-size="11">{peak}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    for offset in range(days):
        day = first + offset
        x0 = LEFT + offset * slot + (slot - 2 * bar) / 2
        for index, kind in enumerate(KINDS):
            parts.extend(_stack(counts, day, kind, x0 + index * bar, bar, plot_h, peak, colour))
        if days <= 14 or offset % max(1, days // 10) == 0:
            label = time.strftime("%m-%d", time.gmtime(day * DAY_S))
            parts.append(
                f'<text x="{x0 + bar:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" font-size="10">{label}</text>'
            )
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 6}" font-size="11">left bar: held for review · right bar: blocked</text>'
    )
    for index, category in enumerate(categories):
        y = TOP + index * 18
        parts.append(f'<rect x="{WIDTH - LEGEND_W + 10}" y="{y}" width="12" height="12" fill="{colour[category]}"/>')
        parts.append(f'<text x="{WIDTH - LEGEND_W + 28}" y="{y + 10}" font-size="11">{escape(category)}</text>')
    if not categories:
        parts.append(f'<text x="{WIDTH - LEGEND_W + 10}" y="{TOP + 10}" font-size="11">nothing held or blocked</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _stack(
    counts: Sequence[DayCount],
    day: int,
    kind: str,
    x: float,
    width: float,
    plot_h: float,
    peak: int,
    colour: dict[str, str],
) -> list[str]:
    """One bar: the day's counts of `kind`, stacked bottom-up by category."""
    segments, base = [], TOP + plot_h
    for count in (c for c in counts if c.day == day and c.kind == kind):
        height = plot_h * count.count / peak
        base -= height
        when = time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S))
        segments.append(
            f'<rect x="{x:.1f}" y="{base:.1f}" width="{width - 1:.1f}" height="{height:.1f}" '
            f'fill="{colour[count.category]}"><title>{when}: {count.count} {kind}, '
            f"{escape(count.category)}</title></rect>"
        )
    return segments
