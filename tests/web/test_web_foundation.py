"""What every page of the service's web server shares (bots/web/app.py): security headers, the encrypted session
cookie, the CSRF check, templates and static files, over real HTTP; and one page in a real Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_session import get_session
from cryptography.fernet import Fernet
from playwright.async_api import Page, expect

from bots.web.app import error_page, web_app
from bots.web.csrf import csrf_token
from bots.web.sessions import COOKIE_NAME
from config.errors import ConfigError
from config.settings import WebSettings, load_settings
from tests.web.browser import screenshot

KEY = Fernet.generate_key().decode()


async def ready() -> dict[str, bool]:
    return {"store": True}


async def token(request: web.Request) -> web.Response:
    """A page's view of the session: its CSRF token (made on first use)."""
    return web.Response(text=csrf_token(await get_session(request)))


async def change(request: web.Request) -> web.Response:
    session = await get_session(request)
    session["changes"] = int(session.get("changes", 0)) + 1
    return web.Response(text=f"changed {session['changes']}")


async def teapot(request: web.Request) -> web.Response:
    return await error_page(request, 418, "Nothing to see <here>.")


def settings(**web_settings: object) -> WebSettings:
    return replace(load_settings(env={}).web, **({"session_secret": KEY} | web_settings))  # type: ignore[arg-type]


def app_for(web_settings: WebSettings) -> web.Application:
    app = web_app(web_settings, ready)
    app.router.add_get("/token", token)
    app.router.add_post("/change", change)
    app.router.add_get("/teapot", teapot)
    return app


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app_for(settings()))) as started:
        yield started


async def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/healthz", "/metrics", "/teapot", "/no-such-page", "/static/site.css"):
        response = await client.get(path)
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert "frame-ancestors 'none'" in csp, path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "same-origin", path


async def test_probes_and_static_files_set_no_cookie_and_pages_escape_what_they_show(client: TestClient) -> None:
    for path in ("/healthz", "/static/site.css"):
        assert COOKIE_NAME not in (await client.get(path)).cookies, path
    response = await client.get("/teapot")
    assert response.status == 418
    body = await response.text()
    assert "Nothing to see &lt;here&gt;." in body and "<here>" not in body
    assert response.headers["Cache-Control"] == "no-store"


async def test_the_session_cookie_is_encrypted_httponly_and_samesite_lax(client: TestClient) -> None:
    response = await client.get("/token")
    cookie = response.cookies[COOKIE_NAME]
    assert cookie["httponly"] is True and cookie["samesite"] == "Lax" and not cookie["secure"]
    assert (await response.text()) not in cookie.value  # the token is inside, encrypted
    again = await client.get("/token")
    assert await again.text() == await response.text()  # one token per session


async def test_the_cookie_is_secure_when_the_public_url_is_https() -> None:
    async with TestClient(TestServer(app_for(settings(public_url="https://imagine.example.org")))) as client:
        response = await client.get("/token")
        assert response.cookies[COOKIE_NAME]["secure"] is True


async def test_a_configured_secret_keeps_sessions_across_processes_and_a_missing_one_is_made_and_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with TestClient(TestServer(app_for(settings()))) as first:
        issued = await (await first.get("/token")).text()
        cookie = first.session.cookie_jar.filter_cookies(first.make_url("/"))[COOKIE_NAME].value
    async with TestClient(TestServer(app_for(settings()))) as second:  # "after a restart": same key
        response = await second.get("/token", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
        assert await response.text() == issued
    async with TestClient(TestServer(app_for(settings(session_secret="")))) as third:
        response = await third.get("/token", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
        assert await response.text() != issued  # another key: a new session
    assert "web.session_secret is not set" in caplog.text


def test_a_session_secret_that_is_not_a_fernet_key_stops_start_up_without_naming_it() -> None:
    with pytest.raises(ConfigError, match="web.session_secret") as raised:
        app_for(settings(session_secret="hunter2-not-a-key"))
    assert "hunter2" not in str(raised.value)


async def test_a_post_needs_the_sessions_token_and_this_sites_origin(client: TestClient) -> None:
    issued = await (await client.get("/token")).text()
    origin = f"http://{client.host}:{client.port}"

    async def post(headers: dict[str, str], form: dict[str, str] | None = None) -> tuple[int, str]:
        response = await client.post("/change", data=form or {}, headers=headers)
        return response.status, await response.text()

    assert (await post({"Origin": origin}))[0] == 403  # no token
    assert (await post({"Origin": origin}, {"csrf_token": "forged"}))[0] == 403
    assert (await post({"Origin": "http://evil.example"}, {"csrf_token": issued}))[0] == 403
    assert (await post({"Referer": "http://evil.example/page"}, {"csrf_token": issued}))[0] == 403
    assert (await post({"Origin": "null"}, {"csrf_token": issued}))[0] == 403
    assert await post({"Origin": origin}, {"csrf_token": issued}) == (200, "changed 1")
    assert await post({"Referer": f"{origin}/token"}, {"csrf_token": issued}) == (200, "changed 2")
    assert await post({"Origin": origin, "X-CSRF-Token": issued}) == (200, "changed 3")
    status, text = await post({"Origin": origin}, {"csrf_token": "forged"})
    assert status == 403 and "did not come from this site" in text and "Traceback" not in text


async def test_a_post_without_a_session_is_refused(client: TestClient) -> None:
    origin = f"http://{client.host}:{client.port}"
    response = await client.post("/change", data={"csrf_token": ""}, headers={"Origin": origin})
    assert response.status == 403


async def test_with_a_public_url_only_that_origin_may_post() -> None:
    public = settings(public_url="https://imagine.example.org/")
    async with TestClient(TestServer(app_for(public))) as client:
        first = await client.get("/token")
        issued, cookie = await first.text(), f"{COOKIE_NAME}={first.cookies[COOKIE_NAME].value}"
        own = f"http://{client.host}:{client.port}"
        form = {"csrf_token": issued}
        refused = await client.post("/change", data=form, headers={"Origin": own, "Cookie": cookie})
        assert refused.status == 403
        allowed = await client.post(
            "/change", data=form, headers={"Origin": "https://imagine.example.org", "Cookie": cookie}
        )
        assert allowed.status == 200


async def test_a_page_renders_in_chromium_with_its_stylesheet_and_no_csp_violation(page: Page) -> None:
    server = TestServer(app_for(settings()))
    async with TestClient(server) as client:
        await page.goto(str(client.make_url("/teapot")))
        await expect(page.get_by_role("alert")).to_contain_text("Nothing to see <here>.")
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 17, 21)"  # site.css loaded under the CSP
        await screenshot(page, "foundation-error-page")
