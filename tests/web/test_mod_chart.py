"""The dashboard's chart and views over a real database: holds and blocks counted per UTC day and category, and
drawn as SVG bars whose heights follow the counts (the browser test shows the page; this checks the numbers)."""

from __future__ import annotations

import re
from pathlib import Path

from bots.web.mod.chart import holds_and_blocks_svg
from bots.web.mod.queries import DAY_S, DayCount, holds_and_blocks_per_day, user_record, users_with_records
from config.settings import ModerationSettings
from engine.requests import GenerationRequest, Requester
from moderation.review import ReviewQueue
from moderation.strikes import StrikeBook
from moderation.verdict import Action, Verdict
from storage.database import Database

DAY = 20_000  # 2024-10-04 (UTC)
ALICE = Requester("discord", "1", "g", "c", "alice")
TRADEMARK = Verdict(Action.REVIEW, ("character", "weapon"), ("a trademarked character...",), "trademark")
NUDITY = Verdict(Action.REVIEW, ("nudity",), ("nudity (not explicit)",), "nudity")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_holds_and_blocks_are_counted_per_utc_day_and_category(tmp_path: Path) -> None:
    database = await Database.open(f"sqlite:///{tmp_path}/imagine.db")
    clock = Clock(DAY * DAY_S + 10)
    try:
        review = ReviewQueue(database, expiry_s=86400.0, clock=clock)
        strikes = StrikeBook(database, ModerationSettings(), clock=clock)
        await review.submit(GenerationRequest("Elmo with a knife", ALICE), TRADEMARK)
        await review.submit(GenerationRequest("Pikachu with a gun", ALICE), TRADEMARK)
        await strikes.add_strike(ALICE.key, "sexual", "explicit: 'porn'")
        clock.now += DAY_S  # the next day
        await review.submit(GenerationRequest("a nude statue", ALICE), NUDITY)
        counts = await holds_and_blocks_per_day(database, since=(DAY - 1) * DAY_S)
        assert counts == [
            DayCount(DAY, "blocked", "sexual", 1),
            DayCount(DAY, "held", "trademark", 2),
            DayCount(DAY + 1, "held", "nudity", 1),
        ]
        assert await holds_and_blocks_per_day(database, since=(DAY + 1) * DAY_S) == [counts[2]]
        record = await user_record(database, ALICE.key)
        assert record.active_strikes(since=0) == 1 and [p.outcome for p in record.prompts] == ["held: pending"] * 3
        assert await users_with_records(database, since=0) == [ALICE.key]
    finally:
        await database.close()


def test_the_chart_draws_one_segment_per_day_kind_and_category_with_heights_in_proportion() -> None:
    counts = [
        DayCount(DAY, "blocked", "sexual", 1),
        DayCount(DAY, "held", "trademark", 2),
        DayCount(DAY + 1, "held", "<nudity>", 1),
    ]
    svg = str(holds_and_blocks_svg(counts, days=7, today=DAY + 1))
    titles = re.findall(r"<title>([^<]*)</title></rect>", svg)
    assert titles == [
        "2024-10-04: 2 held, trademark",
        "2024-10-04: 1 blocked, sexual",
        "2024-10-05: 1 held, &lt;nudity&gt;",
    ]
    heights = [float(h) for h in re.findall(r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="([^"]+)"', svg)]
    assert heights[0] == 2 * heights[1] == 2 * heights[2] > 0
    assert "<nudity>" not in svg  # category names are escaped
    empty = str(holds_and_blocks_svg([], days=7, today=DAY))
    assert "nothing held or blocked" in empty and "<rect" not in empty  # no bars, no legend swatches
