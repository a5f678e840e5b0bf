"""Load through real discord.py: 50 users × 10 /imagine commands dispatched at once to the running service
(tests/load_support.py has the load and the checks)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import pytest

from tests import load_support as load
from tests.discord_harness import DiscordRig, discord_settings, start_rig
from tests.standins.discord_server import DiscordStandIn, InteractionRecord
from tests.support import UnetGate, conversation_settled, gated_runner

pytestmark = pytest.mark.timeout(240)
WEBHOOK_TOKEN = re.compile(r"^/webhooks/\d+/([^/]+)")


def answers_by_user(standin: DiscordStandIn, records: list[InteractionRecord]) -> dict[str, Counter[load.Answer]]:
    """Each command's first answer (a status edit of its thinking message, or a private followup), by user."""
    first: dict[str, load.Answer] = {}
    for request in standin.requests:
        match = WEBHOOK_TOKEN.match(request.path)
        text = str((request.json or {}).get("content") or "") if isinstance(request.json, dict) else ""
        answer = load.classify(text) if match else None
        if match and answer is not None:
            first.setdefault(match.group(1), answer)
    answers: dict[str, Counter[load.Answer]] = {}
    for record in records:
        counts = answers.setdefault(f"discord:{record.user.id}", Counter())
        if record.token in first:
            counts[first[record.token]] += 1
    return answers


def delivered_jobs(standin: DiscordStandIn) -> Counter[str]:
    """How many image messages each job got (its buttons carry its id: imagine:<action>:<job>[:<index>])."""
    return Counter(
        message.custom_ids[0].split(":")[2] for message in standin.messages_with_files() if message.custom_ids
    )


async def test_fifty_users_ten_commands_each(tmp_path: Path, tiny_model_dir: Path) -> None:
    async with DiscordStandIn(ack_deadline_s=None) as standin:  # no clock in the test: the bench checks the 3 s
        settings = load.load_settings(discord_settings(tmp_path, tiny_model_dir, standin, base_size=64))
        runner, gate = gated_runner(settings, 1)
        rig = await start_rig(settings, standin, runner_factory=lambda: runner, moderated=True)
        try:
            await run_load(rig, standin, gate)
        finally:
            gate.release()
            await rig.stop()


async def run_load(rig: DiscordRig, standin: DiscordStandIn, gate: UnetGate) -> None:
    before = load.rss_mib()
    users = [standin.make_user(f"user{u:02d}") for u in range(load.USERS)]
    records = await asyncio.gather(
        *(
            standin.send_command(user, {"prompt": load.prompt(u, c)})
            for u, user in enumerate(users)
            for c in range(load.COMMANDS)
        )
    )
    await standin.wait_until(lambda: all(r.callback_type is not None for r in records), 120, what="every defer")
    assert {r.callback_type for r in records} == {5}  # every command deferred: acknowledged
    await rig.adapter.settled()
    await gate.wait_reached()
    assert rig.service is not None
    running = load.running_jobs(rig.engine)

    answers = answers_by_user(standin, records)
    admitted = await load.jobs_by_user(rig.service.database)
    load.check_answers(answers, admitted, rig.settings)
    total = sum(len(ids) for ids in admitted.values())
    load.check_queue_bound(total, running, sum(c[load.Answer.BUSY] for c in answers.values()))

    gate.release()
    await standin.wait_until(lambda: sum(delivered_jobs(standin).values()) >= total, 180, what="every delivery")
    await conversation_settled(rig.conversation)
    delivered = delivered_jobs(standin)
    assert delivered == Counter({job_id: 1 for ids in admitted.values() for job_id in ids})  # each once
    assert load.report("Discord", answers, before) < 1024
