"""`imagine moderate` and `imagine review`, called the way a shell calls them."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bots.cli import main
from engine.requests import GenerationRequest, Requester
from moderation.review import ReviewQueue, ReviewState
from moderation.verdict import Action, Verdict
from storage.database import Database
from tests.moderation_support import reuse_loaded_model

ROOT = Path(__file__).resolve().parents[1]
HELD = Verdict(Action.REVIEW, ("nudity",), ("nudity or adult content (not explicit): 'nude'",), "nudity")


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/imagine.db"
    monkeypatch.delenv("IMAGINE_CONFIG", raising=False)
    monkeypatch.setenv("IMAGINE_STORE__URL", url)
    reuse_loaded_model(monkeypatch)
    return url


def test_moderate_one_prompt(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["moderate", "nud3 selfie"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("review (nudity)\n") and "'nude'" in out


def test_moderate_one_prompt_as_json(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["moderate", "a lighthouse at dawn", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["prompt"], record["action"], record["reasons"]) == ("a lighthouse at dawn", "allow", [])


def test_moderate_stdin_gives_one_json_line_per_prompt(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = ["a lighthouse", "n.u.d.e 10 y/o", "", "Elmo holding a gun", "a man without a single piece of clothing"]
    data = ("\n".join(prompts) + "\n").encode() + b"caf\xc3\xa9 \xff\n"  # the last line is not valid UTF-8
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["moderate", "-"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["action"] for r in records] == ["allow", "block", "allow", "review", "review", "allow"]
    assert [r["prompt"] for r in records[:5]] == prompts and records[5]["prompt"] == "café \ufffd"
    assert all(set(r) == {"prompt", "action", "reasons"} for r in records)


def test_moderate_needs_a_prompt(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["moderate"]) == 2
    assert "give a PROMPT" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_moderate_stdin_through_the_real_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "IMAGINE_MODERATION__EMBEDDING": "false", "IMAGINE_STORE__URL": f"sqlite:///{tmp_path}/x.db"}
    env.pop("IMAGINE_CONFIG", None)
    prompts = "".join(f"a lighthouse number {i}\np0rn number {i}\n" for i in range(500))
    done = subprocess.run(
        [sys.executable, "-m", "bots", "moderate", "-"],
        input=prompts.encode(),
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=170,
        check=True,
    )
    actions = [json.loads(line)["action"] for line in done.stdout.decode().splitlines()]
    assert actions == ["allow", "block"] * 500


def _held_item(store_url: str, prompt: str) -> str:
    async def submit() -> str:
        db = await Database.open(store_url)
        try:
            request = GenerationRequest(prompt=prompt, requester=Requester("slack", "U1", "T1", "C1"))
            return (await ReviewQueue(db, expiry_s=3600).submit(request, HELD)).id
        finally:
            await db.close()

    return asyncio.run(submit())


def _state(store_url: str, item_id: str) -> ReviewState:
    async def get() -> ReviewState:
        db = await Database.open(store_url)
        try:
            return (await ReviewQueue(db, expiry_s=3600).get(item_id)).state
        finally:
            await db.close()

    return asyncio.run(get())


def test_review_list_approve_reject(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _held_item(store_url, "a nude statue"), _held_item(store_url, "a nude painting")
    assert main(["review", "list"]) == 0
    listing = capsys.readouterr().out
    assert first in listing and second in listing and "slack:U1" in listing and "[nudity]" in listing
    assert main(["review", "list", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["request"]["prompt"] for r in records] == ["a nude statue", "a nude painting"]

    assert main(["review", "approve", first, "--reason", "classical art"]) == 0
    assert "approved" in capsys.readouterr().out
    assert main(["review", "reject", second, "--reason", "not on this server"]) == 0
    assert _state(store_url, first) is ReviewState.APPROVED and _state(store_url, second) is ReviewState.REJECTED

    assert main(["review", "approve", second]) == 1
    assert "already rejected" in capsys.readouterr().err
    assert main(["review", "approve", "ffffffffff"]) == 2
    assert "no review item with id 'ffffffffff'" in capsys.readouterr().err
    assert main(["review", "list"]) == 0
    assert capsys.readouterr().out.strip() == "no pending review items"
    assert main(["review", "audit", "--json"]) == 0
    actions = [(e["action"], e["outcome"]) for e in map(json.loads, capsys.readouterr().out.splitlines())]
    assert actions == [("approve", "failed"), ("approve", "failed"), ("reject", "ok"), ("approve", "ok")]


def test_review_ban_unban_clear(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "ban", "discord:42", "--duration", "2h", "--reason", "spam"]) == 0
    assert capsys.readouterr().out.strip() == "banned discord:42 for 2 h"
    assert main(["review", "bans"]) == 0
    assert capsys.readouterr().out.startswith("discord:42  ")
    assert main(["review", "unban", "discord:42"]) == 0
    assert "lifted 1 ban(s)" in capsys.readouterr().out
    assert main(["review", "clear-strikes", "discord:42"]) == 0
    assert "cleared 0 strike(s)" in capsys.readouterr().out
    assert main(["review", "ban", "not-a-user"]) == 2
    assert main(["review", "ban", "discord:42", "--duration", "soon"]) == 2
