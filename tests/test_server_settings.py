"""Issue 15's pure parts: style presets in the configuration and applied to a request, the `/imagine-settings`
changes an admin may make (never looser than the global limits), strict moderation and a server's own limits in
admission."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bots.conversation.servers import ServerSettings, ServerSettingsStore, parse_change
from bots.conversation.styles import StyleBook
from bots.errors import BadOptions
from config.settings import ConfigError, LimitSettings, StylePreset, load_settings
from engine.requests import GenerationRequest, Requester
from moderation.admission import Admission, Outcome, ServerRules
from moderation.audit import AuditLog
from moderation.verdict import Action
from storage.database import Database
from tests.moderation_support import ManualClock, make_settings, moderator
from tests.storage_support import postgres_url  # noqa: F401 (a fixture)

STYLES = StyleBook(load_settings(env={}).styles)
LIMITS = LimitSettings()


def test_presets_load_from_the_defaults_and_the_environment(tmp_path: Path) -> None:
    settings = load_settings(env={"IMAGINE_STYLES__NEON": '{"prompt": "{prompt}, neon", "steps": 6}'})
    assert {"photo", "oil-painting", "watercolour", "neon"} <= set(settings.styles)
    assert settings.styles["neon"] == StylePreset(prompt="{prompt}, neon", steps=6)
    for bad, why in (
        ('{"prompt": "neon"}', "{prompt} once"),
        ('{"prompt": "{prompt}", "colour": "red"}', "unknown config key styles.neon.colour"),
        ('{"prompt": "{prompt}", "steps": -1}', ">= 0"),
    ):
        with pytest.raises(ConfigError, match=why):
            load_settings(env={"IMAGINE_STYLES__NEON": bad})
    file = tmp_path / "bad.toml"
    file.write_text('[styles."Oil Painting"]\nprompt = "{prompt}"\n')
    with pytest.raises(ConfigError, match="invalid style name"):
        load_settings(file, env={})


def test_a_style_wraps_the_prompt_and_adds_its_negative_prompt_steps_and_guidance() -> None:
    request = GenerationRequest(prompt="a {weird} fox ", negative_prompt="blur")
    name = STYLES.find(" Oil-Painting ")
    assert name == "oil-painting" and STYLES.find("cubism") is None
    styled = STYLES.apply(name, request)
    assert styled.prompt == "a {weird} fox, oil painting on canvas, visible brush strokes, rich colours"
    assert styled.negative_prompt == "blur, photo, text, watermark"
    assert (styled.guidance_scale, styled.steps, styled.style) == (6.0, None, "oil-painting")
    assert [name for name, _ in STYLES.suggestions("p")] == ["photo", "pixel-art", "oil-painting"]


def test_settings_changes_and_what_is_refused() -> None:
    change = ServerSettings()
    change = parse_change(change, "channels", "<#123456789> 987654321,<#123456789>", STYLES, LIMITS, "discord")
    assert change.allowed_channels == ("123456789", "987654321")
    change = parse_change(change, "Style", "Watercolour", STYLES, LIMITS, "discord")
    change = parse_change(change, "moderation", "strict", STYLES, LIMITS, "discord")
    change = parse_change(change, "max-queued", str(LIMITS.max_queued_per_user), STYLES, LIMITS, "discord")
    change = parse_change(change, "moderator-role", "<@&55555555>", STYLES, LIMITS, "discord")
    assert change == ServerSettings(
        ("123456789", "987654321"), "watercolour", True, {"max_queued_per_user": 2}, "55555555", ""
    )
    assert ServerSettings.from_json(change.to_json()) == change
    strong = parse_change(change, "strength", "0.45", STYLES, LIMITS, "discord")
    assert strong.default_strength == 0.45 and ServerSettings.from_json(strong.to_json()) == strong
    assert parse_change(strong, "strength", "default", STYLES, LIMITS, "discord").default_strength is None
    cleared = parse_change(change, "channels", "all", STYLES, LIMITS, "discord")
    assert cleared.allowed_channels == () and cleared.allows_channel("1")
    for key, value, why in (
        ("burst", str(LIMITS.burst + 1), "from 1 to 2"),  # looser than global: refused
        ("daily-quota", "0", "from 1 to"),
        ("daily-quota", "lots", "from 1 to"),
        ("style", "cubism", "no style called"),
        ("moderation", "relaxed", "strict"),
        ("strength", "1.5", "from 0.1"),
        ("strength", "nan", "from 0.1"),
        ("strength", "a lot", "from 0.1"),
        ("channels", "#general", "not a channel"),  # a Slack channel name is no id
        ("colour", "red", "no setting"),
        ("channels", "", "Give a value"),
    ):
        with pytest.raises(BadOptions, match=why):
            parse_change(change, key, value, STYLES, LIMITS, "slack")


def test_server_limits_are_capped_by_the_global_ones_at_use() -> None:
    server = ServerSettings(limits={"burst": 1, "daily_quota": 500})
    rules = server.rules(replace(LIMITS, daily_quota=50))
    assert rules.limits is not None and (rules.limits.burst, rules.limits.daily_quota) == (1, 50)
    assert ServerSettings(strict_moderation=True).rules(LIMITS) == ServerRules(strict=True)


async def test_admission_holds_what_is_not_clearly_benign_and_counts_server_limits(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, moderation={"embedding": False}, limits={"burst": 3, "max_queued_per_user": 9})
    admission = await Admission.open(settings, moderator=moderator(embedding=False), clock=ManualClock(), warm_up=False)
    try:
        alice = Requester("discord", "1", server_id="42")
        beach = GenerationRequest("a woman in a bikini on the beach", requester=alice)
        assert (await admission.check(beach)).admitted
        strict = await admission.check(beach, rules=ServerRules(strict=True))
        assert strict.outcome is Outcome.REVIEW and strict.verdict is not None
        assert strict.verdict.action is Action.REVIEW and "strict moderation" in strict.verdict.reasons[0]
        plain = GenerationRequest("a lighthouse at dawn", requester=alice)
        assert (await admission.check(plain, rules=ServerRules(strict=True))).admitted  # clearly benign

        own = ServerRules(limits=replace(settings.limits, burst=1))
        bob = Requester("discord", "2", server_id="42")
        assert (await admission.check(GenerationRequest("a fox", requester=bob), rules=own)).admitted
        refused = await admission.check(GenerationRequest("a fox", requester=bob), rules=own)
        assert refused.outcome is Outcome.RATE_LIMITED and refused.reason == "burst"
        # The global count was given back: without the server's limits bob still has global budget.
        assert (await admission.check(GenerationRequest("a fox", requester=bob))).admitted
    finally:
        await admission.close()


async def test_settings_and_their_audit_commit_together_on_sqlite(tmp_path: Path) -> None:
    await settings_round_trip(f"sqlite:///{tmp_path}/imagine.db")


async def test_settings_and_their_audit_commit_together_on_postgresql(postgres_url: str) -> None:  # noqa: F811
    await settings_round_trip(postgres_url)


async def settings_round_trip(url: str) -> None:
    database = await Database.open(url)
    try:
        store = ServerSettingsStore(database)
        assert await store.get("discord", "42") == ServerSettings()
        await store.put("discord", "42", ServerSettings(default_style="photo"), "discord:1", "style = photo")
        await store.put("discord", "42", ServerSettings(strict_moderation=True), "discord:1", "moderation = strict")
        await store.put("slack", "42", ServerSettings(allowed_channels=("C1",)), "slack:U1", "channels = C1")
        assert await store.get("discord", "42") == ServerSettings(strict_moderation=True)
        assert await store.get("slack", "42") == ServerSettings(allowed_channels=("C1",))
        entries = await AuditLog(database).entries(target="server:discord:42")
        assert [(e.actor, e.detail) for e in entries] == [
            ("discord:1", "moderation = strict"),
            ("discord:1", "style = photo"),
        ]
    finally:
        await database.close()
