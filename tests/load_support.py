"""What the two load tests (tests/discord/test_discord_load.py, tests/slack/test_slack_load.py) share: the load,
the settings, how an answer is told apart, and the checks both platforms must pass.

The load: `USERS` users each send `COMMANDS` prompts, all dispatched at once. The pipeline is held in its first
call (a `UnetGate`), so nothing finishes while the load arrives: what the limiter and the queue decide is then
exact, whatever the timing. With the default limits (a burst of 2, 2 jobs in flight per user) every user may have
at most 2 prompts admitted; the queue holds `QUEUE_SIZE` waiting jobs, so most of the 100 prompts the limits
allow are refused with "busy, try again" (and their limit counts refunded, so that user's next prompt may be
admitted again while there is room).
"""

from __future__ import annotations

import enum
import resource
from collections import Counter
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select

from bots import messages
from config.settings import Settings
from engine.local import LocalJobQueue
from engine.requests import JobState
from moderation.messages import RATE_LIMITED
from storage.database import Database
from storage.tables import jobs

USERS, COMMANDS, QUEUE_SIZE = 50, 10, 20


def load_settings(base: Settings) -> Settings:
    """The rig's settings with a small queue, the default per-user limits, no server-wide cap (all users are in
    one server), and moderation by rules only (the embedding model is not what is under test)."""
    return replace(
        base,
        engine=replace(base.engine, queue_size=QUEUE_SIZE),
        moderation=replace(base.moderation, embedding=False, image_screening=False),
        limits=replace(base.limits, server_prompts_per_window=1_000_000, daily_quota=1_000_000),
    )


def prompt(user: int, command: int) -> str:
    return f"a lighthouse at dawn, watercolour, take {user}-{command}"


class Answer(enum.StrEnum):
    ADMITTED = "admitted"  # a status line: queued, starting, imagining
    LIMITED = "limited"  # a rate-limit refusal
    BUSY = "busy"  # the queue is full: try again in …


STATUS_MARKS = ("⏳ ", "🎨 ", messages.DONE)
LIMIT_OPENINGS = tuple(template.split("{")[0] for template in RATE_LIMITED.values())


def classify(text: str) -> Answer | None:
    """Which answer a message is (None: not one of the three)."""
    if text == messages.QUEUE_FULL:
        return Answer.BUSY
    if text.startswith(STATUS_MARKS):
        return Answer.ADMITTED
    if text.startswith(LIMIT_OPENINGS):
        return Answer.LIMITED
    return None


async def jobs_by_user(database: Database) -> dict[str, list[str]]:
    """Every journaled job's id, by user key (the job store is what admission let through to the queue)."""
    async with database.read() as db:
        rows = (await db.execute(select(jobs.c.user_key, jobs.c.id))).all()
    found: dict[str, list[str]] = {}
    for user_key, job_id in rows:
        found.setdefault(user_key, []).append(job_id)
    return found


def running_jobs(engine: LocalJobQueue) -> int:
    return sum(job.state is JobState.RUNNING for job in engine.active_jobs())


def check_answers(answers: dict[str, Counter[Answer]], admitted: dict[str, list[str]], settings: Settings) -> None:
    """Every command answered once, the limits exact per user, the queue filled to its bound and no further."""
    burst = min(settings.limits.burst, settings.limits.max_queued_per_user)
    assert len(answers) == USERS
    for user, counts in answers.items():
        assert sum(counts.values()) == COMMANDS, (user, counts)  # one answer per command
        assert counts[Answer.ADMITTED] == len(admitted.get(user, [])), (user, counts)
        assert counts[Answer.ADMITTED] <= burst, (user, counts)
        if not counts[Answer.BUSY]:  # never refunded: exactly what the limiter allows, the rest refused
            assert counts == {Answer.ADMITTED: burst, Answer.LIMITED: COMMANDS - burst}, (user, counts)
    assert set(admitted) <= set(answers)


def check_queue_bound(total_admitted: int, running: int, busy: int) -> None:
    """Held pipeline: the jobs it took (running) plus exactly `QUEUE_SIZE` waiting; everyone else told to retry."""
    assert 1 <= running <= 2  # one pipeline call holds at most max_batch_images (8) = two jobs' images
    assert total_admitted == QUEUE_SIZE + running
    assert busy > 0
    assert "try again in" in messages.QUEUE_FULL.lower()


def rss_mib() -> float:
    """This process's resident memory now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(platform: str, answers: dict[str, Counter[Answer]], before_mib: float) -> float:
    """Print the totals and memory (pytest -s shows it); returns how much resident memory grew, in MiB."""
    totals: Counter[Answer] = sum(answers.values(), Counter())
    exact = sum(not counts[Answer.BUSY] for counts in answers.values())
    grown = rss_mib() - before_mib
    print(
        f"\n{platform} load: {USERS} users x {COMMANDS} commands: "
        + ", ".join(f"{answer} {totals[answer]}" for answer in Answer)
        + f"; {exact} users never told busy (limits checked exactly); "
        f"RSS grew {grown:.0f} MiB, peak RSS {peak_rss_mib():.0f} MiB"
    )
    return grown
