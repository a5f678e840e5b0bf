"""Load through real slack-bolt: 50 users × 10 signed /imagine slash commands posted at once to the running
service's HTTP endpoint (tests/load_support.py has the load and the checks). Each user writes in a channel of
their own, so that every answer (a status message in the channel, or a private refusal) names its user."""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from config.settings import Settings
from moderation.admission import Admission
from tests import load_support as load
from tests.slack_harness import SlackRig, slack_settings, start_rig
from tests.standins.slack_server import SlackStandIn
from tests.support import UnetGate, conversation_settled, gated_runner

pytestmark = pytest.mark.timeout(240)

BURST = 300
"""Connections opened at once: more than aiohttp's default listen backlog (128) holds, well within ours."""
HANDSHAKE_WAIT_S = 10.0
"""How long the burst may take to connect (loopback handshakes take microseconds; a dropped one is retried by TCP
after a second, and dropped again while nothing accepts): reached only when the test fails."""


def user_id(user: int) -> str:
    return f"ULOAD{user:02d}"


def channel_of(user: int) -> str:
    return f"CLOAD{user:02d}"


def answers_by_user(standin: SlackStandIn) -> dict[str, Counter[load.Answer]]:
    """Each command's answer: the status message it posted in its user's channel, or a private refusal."""
    users = {channel_of(u): user_id(u) for u in range(load.USERS)}
    answers: dict[str, Counter[load.Answer]] = {f"slack:{user_id(u)}": Counter() for u in range(load.USERS)}
    for call in standin.calls_to("chat.postMessage", ok_only=True):
        answer = load.classify(str(call.args.get("text") or ""))
        if answer is not None and call.args.get("channel") in users:
            answers[f"slack:{users[call.args['channel']]}"][answer] += 1
    for ephemeral in standin.ephemerals:
        answer = load.classify(ephemeral.text)
        if answer is not None:
            answers[f"slack:{ephemeral.user}"][answer] += 1
    return answers


async def test_fifty_users_ten_commands_each(tmp_path: Path, tiny_model_dir: Path, standin: SlackStandIn) -> None:
    settings = load.load_settings(slack_settings(tmp_path, tiny_model_dir, standin, base_size=64))
    runner, gate = gated_runner(settings, 1)
    rig = await start_rig(settings, standin, runner_factory=lambda: runner, admission=await admission_for(settings))
    try:
        await run_load(rig, standin, gate)
    finally:
        gate.release()
        await rig.stop()


async def admission_for(settings: Settings) -> Admission:
    return await Admission.open(settings, warm_up=False)


async def run_load(rig: SlackRig, standin: SlackStandIn, gate: UnetGate) -> None:
    before = load.rss_mib()
    requests = [
        rig.sender.slash_command(load.prompt(u, c), user_id=user_id(u), channel_id=channel_of(u))
        for u in range(load.USERS)
        for c in range(load.COMMANDS)
    ]
    responses = await asyncio.gather(*(rig.sender.post(request) for request in requests))
    assert [r.status for r in responses] == [200] * len(requests)  # every command acknowledged
    await rig.settled()
    await gate.wait_reached()
    running = load.running_jobs(rig.engine)

    answers = answers_by_user(standin)
    assert rig.service is not None
    admitted = await load.jobs_by_user(rig.service.database)
    load.check_answers(answers, admitted, rig.settings)
    total = sum(len(ids) for ids in admitted.values())
    load.check_queue_bound(total, running, sum(c[load.Answer.BUSY] for c in answers.values()))

    gate.release()
    await standin.wait_for(lambda: len(standin.completed) >= total, 180)
    await conversation_settled(rig.conversation)
    threads = Counter((upload.channel_id, upload.thread_ts) for upload in standin.completed)
    assert len(threads) == total and set(threads.values()) == {1}  # each admitted job's images posted once
    per_user = Counter(f"slack:{users_channel}" for users_channel, _ in threads)
    assert per_user == Counter({f"slack:{channel}": len(ids) for channel, ids in by_channel(admitted).items()})
    assert load.report("Slack", answers, before) < 1024


def by_channel(admitted: dict[str, list[str]]) -> dict[str, list[str]]:
    """Admitted jobs by the channel their user wrote in."""
    return {channel_of(int(user.removeprefix("slack:ULOAD"))): ids for user, ids in admitted.items()}


async def test_a_burst_of_connections_while_the_loop_is_busy_waits_for_it_in_the_listen_backlog(rig: SlackRig) -> None:
    """Slack opens a connection per request: a burst of them while the service's event loop is busy must wait
    in the kernel's listen backlog until the loop accepts them. Here the loop is blocked on purpose while another
    thread opens 300 connections; every handshake completes. (With aiohttp's default backlog the kernel dropped
    all but 129, and each of those requests would have waited a second or more for TCP to try again.)"""
    assert rig.adapter.port is not None
    sockets: list[socket.socket] = []
    burst_done = threading.Event()
    connected: list[int] = []

    def open_burst() -> None:
        try:
            connected.append(_connect_all(rig.adapter.port or 0, sockets))
        finally:
            burst_done.set()

    thread = threading.Thread(target=open_burst)
    thread.start()
    burst_done.wait(HANDSHAKE_WAIT_S + 5)  # blocking the event loop on purpose: nothing accepts meanwhile
    thread.join()
    for connection in sockets:
        connection.close()
    assert connected == [BURST]


def _connect_all(port: int, sockets: list[socket.socket]) -> int:
    """Open `BURST` non-blocking connections to the port; how many completed their handshake in time."""
    with selectors.DefaultSelector() as selector:
        for _ in range(BURST):
            connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            connection.setblocking(False)
            sockets.append(connection)
            connection.connect_ex(("127.0.0.1", port))
            selector.register(connection, selectors.EVENT_WRITE)
        completed = 0
        deadline = time.monotonic() + HANDSHAKE_WAIT_S
        while completed < BURST and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                selector.unregister(key.fileobj)
                connection = key.fileobj
                assert isinstance(connection, socket.socket)
                completed += connection.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        return completed
