"""Requests that Slack did not sign are refused before any handler; repeats of signed ones start nothing new;
secrets never reach the logs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from bots import messages
from bots.slack.adapter import request_key
from engine.requests import JobState
from engine.store import JobStore
from tests.slack_harness import SIGNING_SECRET, SlackRig
from tests.standins.slack_requests import SignedRequest, SlackSender

pytestmark = pytest.mark.timeout(300)


async def journaled_jobs(rig: SlackRig) -> list[str]:
    store = await JobStore.open(rig.settings.store.url)
    try:
        return [record.id for record in await store.in_states(list(JobState))]
    finally:
        await store.close()


def builders(sender: SlackSender) -> dict[str, Callable[..., SignedRequest]]:
    return {
        "slash command": lambda **signing: sender.slash_command("a red fox", **signing),
        "app mention": lambda **signing: sender.app_mention("a red fox", **signing),
        "direct message": lambda **signing: sender.direct_message("a red fox", **signing),
        "button click": lambda **signing: sender.button_click("imagine:r:0123abcd", **signing),
    }


async def test_unsigned_or_badly_signed_requests_get_401_and_reach_nothing(rig: SlackRig) -> None:
    sender = rig.sender
    for kind, build in builders(sender).items():
        wrong_secret = build(secret="not-the-signing-secret")
        stale = build(timestamp=int(time.time()) - 6 * 60)
        future = build(timestamp=int(time.time()) + 6 * 60)
        tampered = build()
        unsigned = build()
        no_timestamp = build()
        no_signature = build()
        garbage_timestamp = build(extra_headers={"X-Slack-Request-Timestamp": "soon"})
        for header in ("X-Slack-Signature", "X-Slack-Request-Timestamp"):
            unsigned.headers.pop(header)
        no_timestamp.headers.pop("X-Slack-Request-Timestamp")
        no_signature.headers.pop("X-Slack-Signature")
        cases = {
            "wrong secret": (wrong_secret, None),
            "older than 5 minutes": (stale, None),
            "from the future": (future, None),
            "tampered body": (tampered, tampered.body + b"&text=x"),
            "no headers": (unsigned, None),
            "no timestamp": (no_timestamp, None),
            "no signature": (no_signature, None),
            "garbage timestamp": (garbage_timestamp, None),
            "not UTF-8": (build(), b"\xff\xfe" + tampered.body),
        }
        for case, (request, body) in cases.items():
            response = await sender.post(request, body=body)
            assert response.status == 401, f"{kind}, {case}: {response}"

    # Nothing reached a listener: no Web API call beyond the adapter's token check at start (not even bolt's
    # lazy auth.test), no job journaled.
    assert [call.api for call in rig.standin.calls] == ["auth.test"]
    assert await journaled_jobs(rig) == []
    # The same app still takes a properly signed request (the checks above were not vacuous)...
    assert (await sender.post(sender.slash_command("a red fox"))).status == 200
    await rig.settled()
    assert len(await journaled_jobs(rig)) == 1
    # ...and a signed body that is not what it claims to be is a clear 400, not a crash.
    assert (await sender.post(sender.signed(b'{"type": "event_callback", ', "application/json"))).status == 400


async def test_url_verification_is_answered(rig: SlackRig) -> None:
    response = await rig.sender.post(rig.sender.url_verification("challenge-0123"))
    assert (response.status, response.json()) == (200, {"challenge": "challenge-0123"})
    bad = await rig.sender.post(rig.sender.url_verification("challenge-0123", secret="wrong"))
    assert bad.status == 401


async def test_a_replayed_or_retried_request_starts_no_second_job(rig: SlackRig) -> None:
    sender = rig.sender
    command = sender.slash_command("a replayed fox")
    first, replayed = await asyncio.gather(sender.post(command), sender.post(command))
    again = await sender.post(command)
    assert [r.status for r in (first, replayed, again)] == [200, 200, 200]

    # Slack re-sends an event it thinks was not acknowledged: same event id, a fresh signature, a retry header.
    mention = sender.app_mention("a retried owl", event_id="Ev0RETRY")
    retry = sender.app_mention(
        "a retried owl",
        event_id="Ev0RETRY",
        extra_headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert (await sender.post(mention)).status == 200
    assert (await sender.post(retry)).status == 200

    await rig.settled()
    assert len(await journaled_jobs(rig)) == 2
    await rig.uploads(2)
    await rig.standin.wait_for(
        lambda: sum(m.text.startswith(messages.DONE) for m in rig.standin.messages.values()) == 2
    )
    assert len(rig.standin.completed) == 2


def test_request_keys() -> None:
    assert request_key({"type": "event_callback", "event_id": "Ev1"}) == "event:Ev1"
    assert request_key({"command": "/imagine", "trigger_id": "t.1"}) == "command:t.1"
    assert request_key({"type": "block_actions", "trigger_id": "t.2"}) == "action:t.2"
    assert request_key({"type": "url_verification", "challenge": "x"}) is None


async def test_secrets_never_reach_the_logs(rig: SlackRig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await rig.sender.post(rig.sender.slash_command("a logged fox"))
    await rig.sender.post(rig.sender.slash_command("bad", secret="wrong"))
    await rig.uploads(1)
    await rig.message_saying(messages.DONE)
    assert "slack_sdk" in caplog.text or "slack_bolt" in caplog.text  # the libraries did log, at debug level
    for secret in (rig.standin.bot_token, SIGNING_SECRET):
        assert secret not in caplog.text
