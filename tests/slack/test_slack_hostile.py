"""Hostile input through the real slack-bolt, property-based (issue 17, item 1): generated slash commands,
interactivity payloads, events and raw bodies, signed correctly or not, posted to one running service (real
admission, the real pipeline held at its first step so nothing is drawn).

For every case: never a 5xx; a request Slack did not sign is refused (401) and reaches nothing; every answer the
bot posts fits Block Kit's limits and shows no traceback, exception name or file path; a command the bot takes
is answered; no click by a non-moderator or non-owner takes effect; the log holds no stack for any of it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st

from bots import messages
from bots.conversation.servers import ServerSettings
from bots.slack.adapter import SETTINGS_COMMAND, SLASH_COMMAND, STYLES_COMMAND
from engine.requests import JobState
from moderation.admission import Admission
from moderation.review import ReviewState
from tests.hostile import Counter, LoopBridge, budget, check_slack_message, no_stacks_logged
from tests.slack_harness import MODERATOR, MODERATOR_CHANNEL, SlackRig, slack_settings, start_rig
from tests.standins.slack_requests import (
    FORM,
    JSON,
    block_actions_payload,
    event_envelope,
    slash_command_payload,
)
from tests.standins.slack_server import TEAM_ID, SlackStandIn
from tests.support import UnetGate, gated_runner

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

OWNER = "UOWNER"
OUR_COMMANDS = (SLASH_COMMAND, STYLES_COMMAND, SETTINGS_COMMAND)
USERS = ["UEVE", "UMALLORY", "U" + "9" * 30, "", "W123", "U<!channel>"]
"""Who sends the generated requests: never the owner of the held job, never a moderator."""
CHANNELS = ["CGENERAL", "DEVE", "COUTSIDE", MODERATOR_CHANNEL, "", "C" + "0" * 50]
ANSWERS = ("chat.postMessage", "chat.postEphemeral", "chat.update", "response_url")
MEGABYTE = 1024 * 1024


@dataclass
class Hostile:
    rig: SlackRig
    gate: UnetGate
    job_id: str
    """The owner's job, running and held at its first step."""
    review_id: str
    """A prompt held for the moderators."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hostile(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> AsyncIterator[Hostile]:
    tmp_path = tmp_path_factory.mktemp("slack-hostile")
    async with SlackStandIn() as standin:
        standin.channels_without_bot.add("COUTSIDE")
        settings = slack_settings(tmp_path, tiny_model_dir, standin, base_size=64)
        settings = replace(settings, moderation=replace(settings.moderation, embedding=False, image_screening=False))
        runner, gate = gated_runner(settings)
        admission = await Admission.open(settings, warm_up=False)
        rig = await start_rig(settings, standin, runner_factory=lambda: runner, admission=admission)
        try:
            sender = rig.sender
            await sender.post(sender.slash_command("a lighthouse at dawn", user_id=OWNER))
            await sender.post(sender.slash_command("a nude woman lying on a bed", user_id="UCAROL"))
            await rig.settled()
            await gate.wait_reached()
            (job,) = [job for job in await rig.engine.active("slack")]
            (item,) = await admission.review.list()
            yield Hostile(rig, gate, job.id, item.id)
        finally:
            gate.release()
            await rig.stop()


# ---- running one case --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int
    answers: list[dict[str, Any]]


async def send(hostile: Hostile, body: bytes, content_type: str, *, signed: bool = True) -> Outcome:
    rig = hostile.rig
    before = len(rig.standin.calls)
    request = rig.sender.signed(body, content_type, secret=None if signed else "not-the-signing-secret")
    response = await rig.sender.post(request)
    await rig.settled()
    assert response.status < 500, f"HTTP {response.status}: {response.text[:300]}"
    new_calls = rig.standin.calls[before:]
    answers = []
    if response.status == 200 and response.text:  # an ack that says something (to an unknown command)
        acked = response.json() if response.text.startswith("{") else {"text": response.text}
        check_slack_message(acked, "ack")
        answers.append(acked)
    for call in new_calls:
        if call.api in ANSWERS:
            check_slack_message(call.args, call.api)
            answers.append(call.args)
    if not signed:
        assert response.status in (401, 413) and new_calls == [], "an unsigned request reached the app"
    return Outcome(response.status, answers)


def form(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()


async def nothing_took_effect(hostile: Hostile) -> None:
    """The owner's job is still running, the held prompt still waits, nobody was banned."""
    admission = hostile.rig.admission
    assert admission is not None
    job = hostile.rig.engine.get(hostile.job_id)
    assert job is not None and job.state is JobState.RUNNING
    record = await hostile.rig.engine.lookup(hostile.job_id)
    assert record is not None and not record.deleted  # Delete by anyone but its requester: refused
    # /imagine-settings by users who are not workspace admins: refused, nothing stored
    assert await hostile.rig.conversation.server_settings("slack", TEAM_ID) == ServerSettings()
    assert (await admission.review.get(hostile.review_id)).state is ReviewState.PENDING
    assert await admission.strikes.bans() == []


# ---- generated inputs --------------------------------------------------------------------------------------------

texty = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["", " ", "\x00\x01\x7f", "a fox\u202e", "<!channel> hi", "--seed x", "--ar 0:1", "--no"]),
    st.builds(lambda s, n: s * n, st.sampled_from(["a", "🦊", "\u200b", "<@U1>"]), st.integers(900, 5000)),
)
maybe_missing = st.sampled_from([None, "", "x"])


def with_changes(base: dict[str, Any], draw: st.DrawFn, keys: list[str], values: st.SearchStrategy[Any]) -> None:
    """Drop or replace some of `keys` in `base`."""
    for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
        value = draw(values)
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value


@st.composite
def slash_forms(draw: st.DrawFn) -> tuple[dict[str, str], bool]:
    fields = slash_command_payload(
        draw(texty),
        user_id=draw(st.sampled_from(USERS)),
        channel_id=draw(st.sampled_from(CHANNELS)),
        command=draw(st.sampled_from([*OUR_COMMANDS, "/imagine", "/imagine-settings", "/dream", "/Imagine", ""])),
        response_url=draw(st.sampled_from(["", "http://127.0.0.1:9/response/x", "not a url"])),
    )
    with_changes(fields, draw, sorted(set(fields) - {"trigger_id"}), maybe_missing)
    if draw(st.integers(0, 9)) == 0:  # no trigger id: not keyed, never taken for a replay
        del fields["trigger_id"]
    return fields, draw(st.booleans()) or draw(st.booleans())  # signed three times in four


def job_ids(hostile: Hostile) -> st.SearchStrategy[str]:
    return st.sampled_from([hostile.job_id, hostile.review_id, "0" * 32, "deadbeef", "", "-", "x" * 300])


@st.composite
def action_ids(draw: st.DrawFn, targets: st.SearchStrategy[str]) -> str:
    verb = draw(st.sampled_from(["u", "v", "r", "c", "d", "approve", "reject", "x", "", "U"]))
    index = draw(st.sampled_from(["", ":0", ":3", ":4", ":-1", ":99999999999999999999", ":x"]))
    return draw(st.one_of(st.just(f"imagine:{verb}:{draw(targets)}{index}"), st.text(max_size=40)))


@st.composite
def interactivity(draw: st.DrawFn, targets: st.SearchStrategy[str]) -> bytes:
    kind = draw(st.sampled_from(["clicks", "clicks", "clicks", "not json", "not an object", "other types"]))
    if kind == "not json":
        return form({"payload": draw(st.sampled_from(["{", "", "null", "{'a': 1}", "\x00"]))})
    if kind == "not an object":
        return form({"payload": json.dumps(draw(st.sampled_from([[], [1], 1, "x", True, None])))})
    payload: dict[str, Any] = block_actions_payload(
        draw(action_ids(targets)),
        user_id=draw(st.sampled_from(USERS)),
        channel_id=draw(st.sampled_from(CHANNELS)),
        message_ts=draw(st.sampled_from(["1700000000.000001", "", "x"])),
        value=draw(st.one_of(st.text(max_size=20), st.just("v" * 3000))),
    )
    if kind == "other types":
        payload["type"] = draw(st.sampled_from(["view_submission", "shortcut", "message_action", "", "x"]))
    junk = st.one_of(st.none(), st.just(""), st.just([]), st.just({}), st.integers(), st.text(max_size=5))
    with_changes(payload, draw, ["user", "container", "channel", "message", "team", "trigger_id"], junk)
    action = payload["actions"][0]
    with_changes(action, draw, ["action_id", "value", "type", "block_id"], junk)
    if draw(st.integers(0, 9)) == 0:
        payload["actions"] = draw(st.sampled_from([[], [{}], "x", None, [payload["actions"][0]] * 30]))
    return form({"payload": json.dumps(payload)})


@st.composite
def events(draw: st.DrawFn) -> bytes:
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(["app_mention", "message", "message", "reaction_added", "team_join", "", "x"])),
        "user": draw(st.sampled_from(USERS)),
        "text": draw(texty),
        "ts": draw(st.sampled_from(["1700000000.000100", "", "x"])),
        "channel": draw(st.sampled_from(CHANNELS)),
        "channel_type": draw(st.sampled_from(["im", "channel", "group", ""])),
    }
    junk = st.one_of(st.none(), st.just(""), st.integers(), st.just({}), st.just([]))
    with_changes(event, draw, ["user", "text", "ts", "channel", "channel_type", "subtype", "bot_id", "thread_ts"], junk)
    envelope: dict[str, Any] = event_envelope(event)
    envelope["type"] = draw(st.sampled_from(["event_callback"] * 4 + ["app_rate_limited", "", "x"]))
    with_changes(envelope, draw, ["event_id", "team_id", "event", "authorizations"], junk)
    return json.dumps(envelope).encode()


raw_bodies = st.tuples(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.sampled_from([b"payload=%7B", b"{}", b"[]", b"null", b"command=/imagine", b"\xff\xfe"]),
        st.integers(1, 200),  # that many bytes over 1 MB (built in the test: no megabyte in a repr)
    ),
    st.sampled_from([FORM, JSON, "text/plain", "multipart/form-data", "application/json; charset=utf-16", ""]),
    st.booleans(),
)


# ---- the properties ----------------------------------------------------------------------------------------------


async def test_slash_commands_with_odd_or_missing_fields(hostile: Hostile) -> None:
    count = Counter("slack.commands")
    bridge = LoopBridge(asyncio.get_running_loop())

    @budget(count.name)
    @given(slash_forms())
    def prop(case: tuple[dict[str, str], bool]) -> None:
        count()
        fields, signed = case
        outcome = bridge.call(lambda: send(hostile, form(fields), FORM, signed=signed))
        if signed and fields.get("command") not in (None, *OUR_COMMANDS):
            assert outcome.answers == [{"text": messages.UNKNOWN_COMMAND}]
        if signed and fields.get("command") in OUR_COMMANDS[1:]:  # answered in the ack, never by an admin here
            assert outcome.status == 200 and outcome.answers and outcome.answers[0]["text"]
        takes = signed and fields.get("command") == "/imagine" and fields.get("user_id") and fields.get("channel_id")
        if takes and fields.get("channel_id") != "COUTSIDE":
            assert outcome.status == 200 and outcome.answers, f"no answer to {fields}"

    with no_stacks_logged():
        await LoopBridge.run(prop)
    count.check()
    await nothing_took_effect(hostile)


async def test_clicks_with_malformed_or_unknown_ids_and_other_peoples_jobs(hostile: Hostile) -> None:
    count = Counter("slack.interactivity")
    bridge = LoopBridge(asyncio.get_running_loop())

    @budget(count.name)
    @given(interactivity(job_ids(hostile)), st.booleans())
    def prop(body: bytes, signed: bool) -> None:
        count()
        bridge.call(lambda: send(hostile, body, FORM, signed=signed or len(body) % 4 != 0))

    with no_stacks_logged():
        await LoopBridge.run(prop)
    count.check()
    await nothing_took_effect(hostile)


async def test_events_of_any_type_and_shape(hostile: Hostile) -> None:
    count = Counter("slack.events")
    bridge = LoopBridge(asyncio.get_running_loop())

    @budget(count.name)
    @given(events(), st.booleans())
    def prop(body: bytes, signed: bool) -> None:
        count()
        bridge.call(lambda: send(hostile, body, JSON, signed=signed or len(body) % 4 != 0))

    with no_stacks_logged():
        await LoopBridge.run(prop)
    count.check()
    await nothing_took_effect(hostile)


async def test_raw_bodies_of_any_bytes_and_size(hostile: Hostile) -> None:
    count = Counter("slack.raw_bodies")
    bridge = LoopBridge(asyncio.get_running_loop())

    @budget(count.name)
    @given(raw_bodies)
    def prop(case: tuple[bytes | int, str, bool]) -> None:
        count()
        body, content_type, signed = case
        if isinstance(body, int):
            body = b"text=" + b"a" * (MEGABYTE + body)
        outcome = bridge.call(lambda: send(hostile, body, content_type, signed=signed))
        if len(body) > MEGABYTE:
            assert outcome.status == 413, outcome

    with no_stacks_logged():
        await LoopBridge.run(prop)
    count.check()
    await nothing_took_effect(hostile)


async def test_a_non_moderator_cannot_decide_and_a_stranger_cannot_cancel(hostile: Hostile) -> None:
    """The plain regression behind the properties: the refusals are said, and nothing happens."""
    rig = hostile.rig
    cancel = rig.sender.button_click(f"imagine:c:{hostile.job_id}", user_id="UEVE")
    approve = rig.sender.button_click(f"imagine:approve:{hostile.review_id}", user_id="UEVE")
    assert (await rig.sender.post(cancel)).status == 200
    assert (await rig.sender.post(approve)).status == 200
    await rig.settled()
    await rig.ephemeral_saying(messages.NOT_YOURS_TO_CANCEL)
    await rig.ephemeral_saying(messages.NOT_A_MODERATOR)
    await nothing_took_effect(hostile)
    assert MODERATOR not in USERS and OWNER not in USERS
