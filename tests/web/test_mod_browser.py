"""The dashboard in a real browser (Playwright driving Debian's Chromium) on the whole service: the real engine
(tiny pipeline), admission and the Discord adapter (real discord.py) against the stand-in Discord, whose OAuth2
provider the moderator signs in through. Prompts are held from Discord commands; the moderator approves one (the
requester gets the images on Discord), rejects another (the requester is told why), bans a user (their next
request is refused); a member without the moderator role is refused. Every page is saved as a screenshot under
tests/artefacts/; the review queue's is also the README's (docs/screenshots/dashboard.png) when
IMAGINE_UPDATE_SCREENSHOTS=1."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from playwright.async_api import Browser, Page, expect

from bots import messages
from engine.screening import ScreeningResult
from tests.discord_harness import DiscordRig, discord_settings, start_rig
from tests.standins.discord_payloads import User
from tests.standins.discord_server import DiscordStandIn
from tests.web.browser import screenshot, update_docs_screenshot
from tests.web.mod_support import with_sign_in

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def standin() -> AsyncIterator[DiscordStandIn]:
    async with DiscordStandIn() as server:
        yield server


class Screener:
    """The output image detector (the boundary): flags every image while `flagging` is set."""

    def __init__(self) -> None:
        self.flagging = threading.Event()

    def __call__(self, image: Image.Image) -> ScreeningResult:
        return ScreeningResult(True, ("FEMALE_BREAST_EXPOSED",)) if self.flagging.is_set() else ScreeningResult(False)


@pytest.fixture
def screener() -> Screener:
    return Screener()


@pytest.fixture
async def rig(
    tmp_path: Path, tiny_model_dir: Path, standin: DiscordStandIn, screener: Screener
) -> AsyncIterator[DiscordRig]:
    base = with_sign_in(discord_settings(tmp_path, tiny_model_dir, standin, base_size=64), standin, None)
    settings = replace(base, moderation=replace(base.moderation, embedding=False))
    running = await start_rig(settings, standin, moderated=True, screener=screener)
    assert running.service is not None and running.service.web is not None
    standin.oauth.register_redirect(f"{origin(running)}/mod/auth/discord/callback")
    yield running
    await running.stop()


def origin(rig: DiscordRig) -> str:
    assert rig.service is not None and rig.service.web is not None
    return f"http://127.0.0.1:{rig.service.web.port}"


async def sign_in_with_discord(page: Page, rig: DiscordRig, user: User, *, shot: str = "") -> None:
    rig.standin.oauth.sign_in_as(user)
    await page.goto(f"{origin(rig)}/mod")
    await expect(page).to_have_url(f"{origin(rig)}/mod/login")
    if shot:
        await screenshot(page, shot)
    await page.get_by_role("link", name="Sign in with Discord").click()
    await expect(page.get_by_text(f"Signed in as {user.username}")).to_be_visible()  # Discord's consent page
    await page.get_by_role("button", name="Authorize").click()


async def test_a_moderator_works_the_queue_in_the_browser_and_requesters_hear_on_discord(
    rig: DiscordRig, standin: DiscordStandIn, screener: Screener, browser: Browser, page: Page
) -> None:
    alice, bob, carol, dave, mod = (standin.make_user(name) for name in ("alice", "bob", "carol", "dave", "modmin"))
    standin.add_member(mod, [standin.moderator_role.id])
    assert rig.admission is not None
    for user, prompt in ((alice, "Elmo holding a bloody knife"), (bob, "Pikachu holding a gun")):
        await standin.send_command(user, {"prompt": prompt})
    await standin.wait_until(lambda: len(standin.channel_messages(standin.moderator_channel_id)) == 2, what="2 holds")
    held = await rig.admission.review.list()
    assert [item.requester.user_id for item in held] == [alice.id, bob.id]

    await sign_in_with_discord(page, rig, mod, shot="mod-login")
    items = page.locator("li.review-item")
    await expect(items).to_have_count(2)
    await expect(items.nth(0).locator(".prompt")).to_have_text("Elmo holding a bloody knife")  # oldest first
    await expect(items.nth(0)).to_contain_text("trademarked character")
    await expect(items.nth(0).locator(".platform")).to_have_text("discord")
    await expect(page.locator(".who")).to_contain_text("modmin")
    shot = await screenshot(page, "mod-queue")
    await update_docs_screenshot(shot, "dashboard.png")

    # Approve alice's prompt: generated and posted to her on Discord, as after the chat button.
    await items.nth(0).get_by_role("button", name="Approve").click()
    await expect(page.locator(".flash")).to_have_text(f"Approved {held[0].id}.")
    delivered = await rig.images_messages(1, channel_id=standin.channel_id)
    assert len(delivered[0].files) == 4
    closed = await rig.message_saying(messages.review_decided(True, f"discord:{mod.id}"))
    assert closed.payload["channel_id"] == standin.moderator_channel_id  # the chat review post says who decided

    # Reject bob's with a reason: he is told, in his words of the moderator.
    await expect(items).to_have_count(1)
    await items.nth(0).get_by_label(f"Reason for rejecting {held[1].id}").fill("No weapons on characters here")
    await items.nth(0).get_by_role("button", name="Reject").click()
    await expect(page.locator(".flash")).to_have_text(f"Rejected {held[1].id}.")
    await rig.message_saying("A moderator declined your prompt: No weapons on characters here.")
    await expect(page.get_by_text("Nothing is waiting for a moderator.")).to_be_visible()
    await screenshot(page, "mod-queue-empty")

    # Ban carol, who already has a strike for a blocked prompt: her next command is refused.
    await standin.send_command(carol, {"prompt": "explicit porn of two adults"})
    await rig.message_saying("aren't allowed here")
    await page.get_by_role("link", name="Users").click()
    await page.get_by_label("User").fill(f"discord:{carol.id}")
    await page.get_by_role("button", name="Look up").click()
    await page.get_by_label(f"Ban length for discord:{carol.id}").select_option(label="until lifted")
    await page.get_by_label(f"Ban reason for discord:{carol.id}").fill("spam")
    await page.get_by_role("button", name="Ban", exact=True).click()
    await expect(page.locator(".flash")).to_have_text(f"Banned discord:{carol.id}.")
    await expect(page.locator(".chip.banned")).to_contain_text("until lifted")
    await expect(page.locator("table.strikes")).to_contain_text("sexual")
    await screenshot(page, "mod-users")
    await standin.send_command(carol, {"prompt": "a lighthouse at dawn"})
    await rig.message_saying("Your access to image generation is suspended until a moderator lifts it.")

    # The audit log has every decision, filterable; the chart counts the two holds.
    await page.get_by_role("link", name="Audit log").click()
    await page.get_by_label("Action").fill("reject")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.audit tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.nth(0)).to_contain_text(f"discord:{mod.id}")
    await expect(rows.nth(0)).to_contain_text("No weapons on characters here")
    await page.get_by_role("link", name="Clear").click()
    await expect(page.locator("table.audit")).to_contain_text("approve")
    await expect(page.locator("table.audit")).to_contain_text("ban")
    await screenshot(page, "mod-audit")
    await page.get_by_role("link", name="Holds & blocks").click()
    chart = page.locator("svg.chart")  # two held (trademark) and one blocked (sexual), by day
    await expect(chart.locator("rect title").filter(has_text="held, trademark")).not_to_have_count(0)
    await expect(chart.locator("rect title").filter(has_text="blocked, sexual")).not_to_have_count(0)
    await expect(chart.locator("rect title").filter(has_text="blocked, trademark")).to_have_count(0)
    await screenshot(page, "mod-stats")

    # An image the output filter withheld: blurred on the page until clicked, served to moderators only.
    screener.flagging.set()
    await standin.send_command(dave, {"prompt": "a beach at noon"})
    await rig.images_messages(2, channel_id=standin.channel_id)  # dave's, blurred
    screener.flagging.clear()
    await page.get_by_role("link", name="Review queue").click()
    withheld = page.locator(".withheld img")
    await expect(withheld).to_have_count(4)
    await expect(withheld.nth(0)).to_have_css("filter", "blur(24px)")
    await withheld.nth(0).click()
    await expect(withheld.nth(0)).to_have_css("filter", "none")
    await expect(withheld.nth(1)).to_have_css("filter", "blur(24px)")
    assert await withheld.nth(0).evaluate("image => image.naturalWidth") == 64
    await screenshot(page, "mod-queue-withheld")
    image_url = origin(rig) + str(await withheld.nth(0).get_attribute("src"))

    # A member without the moderator role, in another browser session, is refused.
    other = await browser.new_context()
    stranger_page = await other.new_page()
    member = standin.make_user("member")
    standin.add_member(member, [standin.member_role.id])
    await sign_in_with_discord(stranger_page, rig, member)
    await expect(stranger_page.get_by_text("You are not a moderator here.")).to_be_visible()
    await screenshot(stranger_page, "mod-refused")
    for path in ("/mod/users", image_url.removeprefix(origin(rig))):
        await stranger_page.goto(origin(rig) + path)
        await expect(stranger_page).to_have_url(f"{origin(rig)}/mod/login")
    await other.close()

    # Approving the withheld job releases the originals to dave, as the chat button does.
    await page.locator("li.review-item").get_by_role("button", name="Approve").click()
    released = (await rig.images_messages(3, channel_id=standin.channel_id))[-1]
    assert len(released.files) == 4 and "withheld" not in released.content
