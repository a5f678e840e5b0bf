"""Hostile input, property-based, at the pure layer: button ids, Slack's prompt text and flags, request validation,
prompt normalisation and moderation, and every message built from what a user typed. Each parser either answers or
raises its one documented error, whose text is short, names no internals and fits any platform."""

from __future__ import annotations

import functools

from hypothesis import given
from hypothesis import strategies as st

from bots import messages
from bots.buttons import Action, Button, parse_button
from bots.errors import BadButton, BadOptions
from bots.slack.blocks import SECTION_TEXT_LIMIT, message_blocks
from bots.slack.text import parse_prompt_text, plain_text
from config.settings import load_settings
from engine.errors import InvalidRequest
from engine.requests import MAX_SEED, GenerationRequest, JobState, ProgressEvent, Requester
from engine.validation import clean_prompt, prepare_record
from moderation.policy import ModerationPolicy
from moderation.prompts import PromptModerator
from tests.hostile import (
    BUDGET,
    DISCORD_CONTENT_LIMIT,
    FAST_TOTAL_AT_LEAST,
    Counter,
    assert_no_leak,
    budget,
)

REFUSAL_LIMIT = 300
"""A refusal names the bad value, shortened: it must fit beside a mention or a quote on any platform."""

NASTY = [
    "",
    " ",
    "\x00",
    "\u200b\u200d\ufeff",
    "\u202e\u202d",
    "\r\n\t\x0b\x0c",
    "💥" * 50,
    "e\u0301" * 30,
    "Ａ",
    "<!channel>",
    "<@U123|x>",
    "&amp;&lt;&gt;",
    "--seed",
    "--no",
    "--ar 99:1",
    "imagine:",
    ":",
    "\ud7ff",
    "𝕒𝕓𝕔",
    "%s%d{0}{}",
    "' OR 1=1 --",
    "\\x00\\n",
]
nasty_pieces = st.sampled_from(NASTY)
any_text = st.text(st.characters(codec="utf-8"), max_size=300)
hostile_text = st.one_of(
    any_text,
    st.lists(st.one_of(nasty_pieces, any_text), max_size=8).map("".join),
    st.builds(lambda piece, n: piece * n, st.one_of(nasty_pieces, st.text(max_size=3)), st.integers(0, 3000)),
)


def test_the_fast_profile_generates_at_least_ten_thousand_cases() -> None:
    """The issue's floor: each property asserts it ran its budget, and the budgets add up."""
    assert sum(BUDGET.values()) >= FAST_TOTAL_AT_LEAST


# ---- button ids ------------------------------------------------------------------------------------------------------

segment = st.one_of(st.text(max_size=12), st.sampled_from(["imagine", *(a.value for a in Action), "", "-", "0"]))
custom_ids = st.one_of(
    hostile_text,
    st.lists(segment, min_size=1, max_size=6).map(":".join),
    st.builds(lambda a, t, i: f"imagine:{a}:{t}:{i}", st.sampled_from(list(Action)), st.text(max_size=40), any_text),
)


def test_button_ids_parse_or_are_refused_as_bad_buttons() -> None:
    count = Counter("parsers.button_ids")

    @budget(count.name)
    @given(custom_ids)
    def prop(custom_id: str) -> None:
        count()
        try:
            button = parse_button(custom_id)
        except BadButton as error:  # never shown to a user (they see UNKNOWN_BUTTON); logged as one line
            assert "\n" not in str(error) and len(str(error)) <= 1200
            return
        assert isinstance(button.action, Action) and button.target
        assert parse_button(button.custom_id) == button  # what we parse, we can write back

    prop()
    count.check()


@given(st.sampled_from(list(Action)), st.text("0123456789abcdef-", max_size=40), st.none() | st.integers(0, 9))
def test_every_button_we_make_parses_back(action: Action, target: str, index: int | None) -> None:
    button = Button(action, target, index)
    if target.replace("-", ""):
        assert parse_button(button.custom_id) == button
        assert len(button.custom_id) <= 100


# ---- Slack prompt text -----------------------------------------------------------------------------------------------

flags = st.sampled_from(["--no", "--seed", "--ar", "--aspect", "--SEED", "--No", "--", "—seed"])
values = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["16:9", "0:1", "1e400:1", "nan:1", "x", "", "4:1", "9" * 5000]),
    any_text,
)
slack_texts = st.one_of(
    hostile_text,
    st.lists(st.one_of(any_text, flags, values), max_size=10).map(" ".join),
)


def test_slack_text_parses_or_is_refused_with_a_short_reason() -> None:
    count = Counter("parsers.slack_text")

    @budget(count.name)
    @given(slack_texts)
    def prop(text: str) -> None:
        count()
        plain_text(text)
        try:
            parsed = parse_prompt_text(text)
        except BadOptions as error:
            refusal = messages.invalid_request(str(error))
            assert len(refusal) <= REFUSAL_LIMIT
            assert_no_leak(refusal, "slack options")
            return
        assert isinstance(parsed.prompt, str) and isinstance(parsed.aspect, str)

    prop()
    count.check()


# ---- request validation (the engine's rules, shared by every adapter) -----------------------------------------------

ENGINE = load_settings(env={}).engine
seeds = st.one_of(st.none(), st.integers(0, MAX_SEED), st.integers(-(10**40), 10**40))
aspects = st.one_of(
    st.sampled_from(["1:1", "16:9", "0:0", "0:1", "1:0", "4:1", "5:1", "1:4.0001", "1e308:1e-308", "9" * 400 + ":1"]),
    st.builds("{}:{}".format, st.floats(allow_nan=True), st.floats(allow_nan=True)),
    hostile_text,
)
requester = Requester(platform="test", user_id="U1")


def test_validation_cleans_or_refuses_with_a_short_reason() -> None:
    count = Counter("parsers.validation")

    @budget(count.name)
    @given(hostile_text, hostile_text, seeds, aspects)
    def prop(prompt: str, negative: str, seed: int | None, aspect: str) -> None:
        count()
        request = GenerationRequest(
            prompt=prompt, requester=requester, negative_prompt=negative, seed=seed, aspect=aspect
        )
        try:
            record = prepare_record(request, ENGINE)
        except InvalidRequest as error:
            refusal = messages.invalid_request(str(error))
            assert len(refusal) <= REFUSAL_LIMIT, f"{len(refusal)} characters: {refusal[:120]!r}"
            assert_no_leak(refusal, "validation")
            return
        cleaned = record.request.prompt
        assert cleaned and cleaned == clean_prompt(cleaned, ENGINE.max_prompt_chars)  # idempotent
        assert len(cleaned) <= ENGINE.max_prompt_chars and cleaned.isprintable()
        assert 0 <= record.seeds[0] <= MAX_SEED and record.width % 64 == 0 and record.height % 64 == 0

    prop()
    count.check()


# ---- prompt normalisation and moderation (term lists, rules; no embedding model) ------------------------------------


@functools.cache
def moderator() -> PromptModerator:
    return PromptModerator(ModerationPolicy.load())


def test_moderation_judges_any_text() -> None:
    count = Counter("parsers.moderation_normalize")

    @budget(count.name)
    @given(hostile_text)
    def prop(prompt: str) -> None:
        count()
        verdict = moderator().moderate(prompt)
        assert verdict.action.value in ("allow", "review", "block")
        for reason in verdict.reasons:
            assert len(reason) <= REFUSAL_LIMIT

    prop()
    count.check()


# ---- messages built from user input ----------------------------------------------------------------------------------

states = st.sampled_from(list(JobState))


def test_messages_built_from_any_prompt_fit_every_platform() -> None:
    count = Counter("parsers.messages")

    @budget(count.name)
    @given(hostile_text, states, st.integers(0, 10**6), st.lists(st.integers(0, MAX_SEED), min_size=1, max_size=8))
    def prop(prompt: str, state: JobState, number: int, job_seeds: list[int]) -> None:
        count()
        event = ProgressEvent(job_id="j", state=state, position=number, step=number % 50, total_steps=50)
        texts = [
            messages.status(event, prompt),
            messages.status_delivery_delayed(prompt),
            messages.delivery_text(prompt, job_seeds, number % 5),
            messages.upscale_text(prompt, number % 4, job_seeds[0]),
            messages.review_post("slack", "U" * 40, " in #general", prompt, [prompt[:50]]),
            messages.review_decided(bool(number % 2), "moderator", prompt[:500]),
        ]
        for text in texts:
            assert len(text) <= DISCORD_CONTENT_LIMIT, f"{len(text)} characters"
            (section, *_) = message_blocks(text)
            assert len(section["text"]["text"]) <= SECTION_TEXT_LIMIT

    prop()
    count.check()
