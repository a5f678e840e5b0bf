"""Signing in to the dashboard, over HTTP against the stand-in providers: Discord OAuth2, Sign in with Slack
(OpenID Connect) and local accounts; and every refusal: a wrong or missing state, a reused code, a user the
service does not let moderate, no session, no CSRF token or a foreign origin, too many attempts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import yarl

from bots.web.mod.auth import RECHECK_S
from bots.web.mod.local_accounts import LocalAccounts
from moderation.admission import Admission
from storage.database import Database
from tests.redis_support import REDIS_URL, free_port, redis_prefix  # noqa: F401 (a fixture)
from tests.standins.discord_server import DiscordStandIn
from tests.standins.slack_server import SlackStandIn
from tests.support import make_settings
from tests.web.mod_support import Dashboard, ServiceParts, callback_path, dashboard, follow_provider, with_sign_in

pytestmark = pytest.mark.timeout(120)
PASSWORD = "correct horse battery staple"
# Every page and action of the dashboard (a new one must be added here, and so is checked for the guard).
GUARDED_GETS = ["/mod", "/mod/users", "/mod/users?user=discord:1", "/mod/audit", "/mod/stats", "/mod/review/x/image/0"]
GUARDED_POSTS = [
    "/mod/review/x/approve",
    "/mod/review/x/reject",
    "/mod/users/ban",
    "/mod/users/unban",
    "/mod/users/clear-strikes",
]


@pytest.fixture
async def discord() -> AsyncIterator[DiscordStandIn]:
    async with DiscordStandIn() as server:
        yield server


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(usergroups={"SMODS": ["UGROUPMOD"]}) as server:
        yield server


@pytest.fixture
async def parts(tmp_path: Path, discord: DiscordStandIn, slack: SlackStandIn) -> AsyncIterator[ServiceParts]:
    settings = with_sign_in(make_settings(tmp_path, "unused"), discord, slack)
    settings = replace(
        settings,
        slack=replace(settings.slack, moderator_user_ids=["UMOD"], moderator_usergroup_id="SMODS"),
        moderation=replace(settings.moderation, embedding=False),
        dashboard=replace(settings.dashboard, sign_in_attempts=3),
    )
    database = await Database.open(settings.store.url)
    admission = await Admission.open(settings, database=database, warm_up=False)
    try:
        yield ServiceParts(settings, database, admission)
    finally:
        await admission.close()
        await database.close()


@pytest.fixture
async def site(parts: ServiceParts, discord: DiscordStandIn, slack: SlackStandIn) -> AsyncIterator[Dashboard]:
    async with dashboard(parts) as running:
        discord.oauth.register_redirect(f"{running.origin}/mod/auth/discord/callback")
        slack.oidc.register_redirect(f"{running.origin}/mod/auth/slack/callback")
        yield running


async def signed_in_as(site: Dashboard) -> str | None:
    """Who the queue page says is signed in (None: it sent us to sign in)."""
    response = await site.client.get("/mod", allow_redirects=False)
    if response.status == 302:
        assert response.headers["Location"] == "/mod/login"
        return None
    assert response.status == 200
    text = await response.text()
    return text.split('<span class="who">', 1)[1].split(" <small>", 1)[0]


async def audit_actions(parts: ServiceParts) -> list[tuple[str, str, str]]:
    assert parts.admission is not None
    return [(e.actor, e.action, e.outcome) for e in reversed(await parts.admission.audit.entries())]


# ---- Discord ----------------------------------------------------------------------------------------------


async def test_a_discord_moderator_signs_in_and_the_role_is_asked_of_the_guild_with_the_bot_token(
    site: Dashboard, discord: DiscordStandIn, parts: ServiceParts
) -> None:
    mod = discord.make_user("modmin")
    discord.add_member(mod, [discord.moderator_role.id])
    discord.oauth.sign_in_as(mod)
    assert await signed_in_as(site) is None

    _, answer = await follow_provider(site.client, "/mod/auth/discord")
    assert answer.status == 303 and answer.headers["Location"] == "/mod"
    assert await signed_in_as(site) == "modmin"
    (exchange,) = discord.requests_to("POST", r"/oauth2/token")
    assert exchange.headers["Authorization"].startswith("Basic ")  # the client secret, never in a URL
    assert discord.requests_to("GET", r"/users/@me")[-1].headers["Authorization"].startswith("Bearer ")
    member = discord.requests_to("GET", rf"/guilds/{discord.guild.id}/members/{mod.id}")
    assert member and member[0].headers["Authorization"] == f"Bot {discord.token}"
    assert (f"discord:{mod.id}", "sign_in", "ok") in await audit_actions(parts)


async def test_a_discord_user_without_the_moderator_role_is_refused_and_the_refusal_audited(
    site: Dashboard, discord: DiscordStandIn, parts: ServiceParts
) -> None:
    member = discord.make_user("member")
    discord.add_member(member, [discord.member_role.id])
    discord.oauth.sign_in_as(member)
    _, answer = await follow_provider(site.client, "/mod/auth/discord")
    assert answer.status == 403 and "You are not a moderator here." in await answer.text()
    assert await signed_in_as(site) is None
    stranger = discord.make_user("stranger")  # not in the guild at all: 404 Unknown Member
    discord.oauth.sign_in_as(stranger)
    _, answer = await follow_provider(site.client, "/mod/auth/discord")
    assert answer.status == 403 and await signed_in_as(site) is None
    refused = [entry for entry in await audit_actions(parts) if entry[2] == "refused"]
    assert refused == [(f"discord:{member.id}", "sign_in", "refused"), (f"discord:{stranger.id}", "sign_in", "refused")]


async def test_a_callback_with_a_wrong_or_missing_state_is_refused_before_the_code_is_used(
    site: Dashboard, discord: DiscordStandIn
) -> None:
    mod = discord.make_user("modmin")
    discord.add_member(mod, [discord.moderator_role.id])
    discord.oauth.sign_in_as(mod)
    started = await site.client.get("/mod/auth/discord", allow_redirects=False)
    sent_state = yarl.URL(started.headers["Location"]).query["state"]
    code = discord.oauth.auth.issue_code(
        {"client_id": discord.oauth.client_id, "redirect_uri": f"{site.origin}/mod/auth/discord/callback"}, mod
    )
    for query in (f"?code={code}&state=forged{sent_state}", f"?code={code}", f"?code={code}&state="):
        answer = await site.client.get("/mod/auth/discord/callback" + query, allow_redirects=False)
        assert answer.status == 403 and "expired" in await answer.text()
    assert discord.oauth.auth.exchanges == []  # never sent to Discord
    assert await signed_in_as(site) is None


async def test_a_reused_code_is_refused(site: Dashboard, discord: DiscordStandIn) -> None:
    mod = discord.make_user("modmin")
    discord.add_member(mod, [discord.moderator_role.id])
    discord.oauth.sign_in_as(mod)
    callback, answer = await follow_provider(site.client, "/mod/auth/discord")
    assert answer.status == 303
    await site.post_form("/mod/logout", {})
    assert await signed_in_as(site) is None
    # The same callback again: its state was used up with the first sign-in.
    replay = await site.client.get(callback_path(callback), allow_redirects=False)
    assert replay.status == 403
    # A fresh flow (valid state) carrying the old code: Discord refuses the code, and so do we.
    started = await site.client.get("/mod/auth/discord", allow_redirects=False)
    state = yarl.URL(started.headers["Location"]).query["state"]
    old_code = yarl.URL(callback).query["code"]
    answer = await site.client.get(f"/mod/auth/discord/callback?code={old_code}&state={state}", allow_redirects=False)
    text = await answer.text()
    assert answer.status == 403 and "Sign-in with Discord failed" in text and "invalid_grant" not in text
    assert [outcome for code, outcome in discord.oauth.auth.exchanges if code == old_code] == ["ok", "invalid_grant"]
    assert await signed_in_as(site) is None


async def test_a_moderator_whose_role_is_taken_away_is_signed_out_within_a_minute(
    site: Dashboard, discord: DiscordStandIn
) -> None:
    mod = discord.make_user("modmin")
    discord.add_member(mod, [discord.moderator_role.id])
    discord.oauth.sign_in_as(mod)
    await follow_provider(site.client, "/mod/auth/discord")
    discord.add_member(mod, [])
    assert await signed_in_as(site) == "modmin"  # checked at sign-in, not again yet
    site.clock.now += RECHECK_S + 1
    assert await signed_in_as(site) is None


# ---- Slack ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", ["UMOD", "UGROUPMOD"])
async def test_a_slack_moderator_by_id_or_user_group_signs_in_with_openid_connect(
    site: Dashboard, slack: SlackStandIn, parts: ServiceParts, user_id: str
) -> None:
    slack.oidc.sign_in_as(user_id, f"name-{user_id}")
    _, answer = await follow_provider(site.client, "/mod/auth/slack")
    assert answer.status == 303
    assert await signed_in_as(site) == f"name-{user_id}"
    token_calls = [call for call in slack.calls if call.api == "openid.connect.token"]
    assert token_calls[0].args["client_secret"] == slack.oidc.client_secret
    user_info = [call for call in slack.calls if call.api == "openid.connect.userInfo"]
    assert user_info[0].headers["Authorization"] != f"Bearer {slack.bot_token}"  # the user's own token
    assert (f"slack:{user_id}", "sign_in", "ok") in await audit_actions(parts)


@pytest.mark.parametrize(("user_id", "team"), [("UPLAIN", None), ("UMOD", "TOTHERTEAM")])
async def test_a_slack_user_who_is_not_a_moderator_of_this_workspace_is_refused(
    site: Dashboard, slack: SlackStandIn, user_id: str, team: str | None
) -> None:
    slack.oidc.sign_in_as(user_id, "someone", team)
    _, answer = await follow_provider(site.client, "/mod/auth/slack")
    assert answer.status == 403 and await signed_in_as(site) is None


async def test_a_reused_slack_code_is_refused(site: Dashboard, slack: SlackStandIn) -> None:
    slack.oidc.sign_in_as("UMOD", "mod")
    callback, answer = await follow_provider(site.client, "/mod/auth/slack")
    assert answer.status == 303
    await site.post_form("/mod/logout", {})
    started = await site.client.get("/mod/auth/slack", allow_redirects=False)
    state = yarl.URL(started.headers["Location"]).query["state"]
    old_code = yarl.URL(callback).query["code"]
    answer = await site.client.get(f"/mod/auth/slack/callback?code={old_code}&state={state}", allow_redirects=False)
    assert answer.status == 403 and await signed_in_as(site) is None
    assert [outcome for code, outcome in slack.oidc.auth.exchanges if code == old_code] == ["ok", "invalid_grant"]


# ---- local accounts and the rate limit --------------------------------------------------------------------


async def test_a_local_account_signs_in_and_a_wrong_password_is_refused(site: Dashboard, parts: ServiceParts) -> None:
    await LocalAccounts(parts.database).add("alice", PASSWORD)
    wrong = await site.post_form("/mod/login", {"name": "alice", "password": "not it at all"}, token_from="/mod/login")
    assert wrong.status == 403 and "Wrong name or password." in await wrong.text()
    assert await signed_in_as(site) is None
    right = await site.post_form("/mod/login", {"name": "alice", "password": PASSWORD}, token_from="/mod/login")
    assert right.status == 303 and await signed_in_as(site) == "alice"
    assert ("local:alice", "sign_in", "refused") in await audit_actions(parts)


async def test_sign_in_attempts_are_rate_limited_even_with_the_right_password(
    site: Dashboard, parts: ServiceParts
) -> None:
    await LocalAccounts(parts.database).add("alice", PASSWORD)
    for _ in range(3):  # dashboard.sign_in_attempts = 3 in this rig
        answer = await site.post_form(
            "/mod/login", {"name": "alice", "password": "guess guess guess"}, token_from="/mod/login"
        )
        assert answer.status == 403
    limited = await site.post_form("/mod/login", {"name": "alice", "password": PASSWORD}, token_from="/mod/login")
    assert limited.status == 429 and "Too many sign-in attempts" in await limited.text()
    assert int(limited.headers["Retry-After"]) > 0 and await signed_in_as(site) is None
    site.clock.now += parts.settings.dashboard.sign_in_window_s + 1
    again = await site.post_form("/mod/login", {"name": "alice", "password": PASSWORD}, token_from="/mod/login")
    assert again.status == 303


async def test_scaled_out_web_processes_share_one_count_of_sign_in_attempts(
    parts: ServiceParts,
    redis_prefix: str,  # noqa: F811
) -> None:
    """With engine.queue = "redis" the attempts are counted in Redis: two dashboards (two web processes behind one
    address) allow three attempts between them, not three each."""
    engine = replace(parts.settings.engine, queue="redis", redis_url=REDIS_URL, redis_prefix=redis_prefix)
    scaled_out = replace(parts, settings=replace(parts.settings, engine=engine))
    await LocalAccounts(parts.database).add("alice", PASSWORD)
    async with dashboard(scaled_out) as first, dashboard(scaled_out, first.clock) as second:
        answers = []
        for site in (first, second, first, second):
            answer = await site.post_form("/mod/login", {"name": "alice", "password": "guess"}, token_from="/mod/login")
            answers.append(answer.status)
        assert answers == [403, 403, 403, 429]
        first.clock.now += parts.settings.dashboard.sign_in_window_s + 1
        again = await second.post_form("/mod/login", {"name": "alice", "password": PASSWORD}, token_from="/mod/login")
        assert again.status == 303


async def test_sign_in_is_refused_with_a_clear_page_while_the_shared_count_cannot_be_reached(
    parts: ServiceParts, caplog: pytest.LogCaptureFixture
) -> None:
    """Scaled out with Redis down: no attempt goes through uncounted, and the page says so without a traceback."""
    engine = replace(parts.settings.engine, queue="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    scaled_out = replace(parts, settings=replace(parts.settings, engine=engine))
    await LocalAccounts(parts.database).add("alice", PASSWORD)
    async with dashboard(scaled_out) as site:
        answer = await site.post_form("/mod/login", {"name": "alice", "password": PASSWORD}, token_from="/mod/login")
        page = await answer.text()
        assert answer.status == 503 and "Sign-in is unavailable for a moment" in page and "Traceback" not in page
        assert await signed_in_as(site) is None
    assert "sign-in attempts cannot be counted" in caplog.text and "Traceback" not in caplog.text


# ---- no session, no CSRF token ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", GUARDED_GETS)
async def test_every_page_without_a_session_redirects_to_sign_in(site: Dashboard, path: str) -> None:
    answer = await site.client.get(path, allow_redirects=False)
    assert answer.status == 302 and answer.headers["Location"] == "/mod/login"


@pytest.mark.parametrize("path", GUARDED_POSTS)
async def test_every_action_without_a_moderator_is_refused_even_with_a_valid_csrf_token(
    site: Dashboard, path: str
) -> None:
    bare = await site.client.post(path, data={"user": "discord:1"}, allow_redirects=False)
    assert bare.status == 403
    with_token = await site.post_form(path, {"user": "discord:1"}, token_from="/mod/login")
    assert with_token.status == 403 and "Sign in as a moderator first." in await with_token.text()


async def test_a_signed_in_moderator_s_actions_need_the_csrf_token_and_this_origin(
    site: Dashboard, parts: ServiceParts, discord: DiscordStandIn
) -> None:
    await LocalAccounts(parts.database).add("alice", PASSWORD)
    await site.post_form("/mod/login", {"name": "alice", "password": PASSWORD}, token_from="/mod/login")
    token = await site.csrf_token("/mod")
    no_token = await site.client.post("/mod/users/ban", data={"user": "discord:42"}, allow_redirects=False)
    wrong_token = await site.client.post(
        "/mod/users/ban", data={"user": "discord:42", "csrf_token": token + "x"}, allow_redirects=False
    )
    foreign = await site.client.post(
        "/mod/users/ban",
        data={"user": "discord:42", "csrf_token": token, "duration": ""},
        headers={"Origin": "http://evil.example"},
        allow_redirects=False,
    )
    assert [no_token.status, wrong_token.status, foreign.status] == [403, 403, 403]
    assert parts.admission is not None and await parts.admission.strikes.active_ban("discord:42") is None
    done = await site.post_form("/mod/users/ban", {"user": "discord:42", "duration": "", "reason": "spam"})
    assert done.status == 303 and await parts.admission.strikes.active_ban("discord:42") is not None


async def test_sign_out_ends_the_session(site: Dashboard, parts: ServiceParts) -> None:
    await LocalAccounts(parts.database).add("alice", PASSWORD)
    await site.post_form("/mod/login", {"name": "alice", "password": PASSWORD}, token_from="/mod/login")
    assert await signed_in_as(site) == "alice"
    out = await site.post_form("/mod/logout", {})
    assert out.status == 303 and await signed_in_as(site) is None


async def test_while_the_service_starts_sign_in_answers_503_in_plain_words(parts: ServiceParts) -> None:
    starting = ServiceParts(parts.settings, parts.database, admission=None)
    await LocalAccounts(parts.database).add("alice", PASSWORD)
    async with dashboard(starting) as site:
        assert (await site.client.get("/mod/login")).status == 200
        answer = await site.post_form("/mod/login", {"name": "alice", "password": PASSWORD}, token_from="/mod/login")
        text = await answer.text()
        assert answer.status == 503 and "The service is starting" in text and "Traceback" not in text
        assert await signed_in_as(site) is None
