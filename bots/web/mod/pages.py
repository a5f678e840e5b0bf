"""The dashboard's pages: the review queue, users (strikes, bans, recent prompts), the audit log and the chart.

Every handler is `moderator_only`. Decisions go through the same code path as a moderator's button in chat:
the review queue records the decision (and its audit entry) and the conversation's review desk acts on it exactly
once (approve: the prompt is generated and delivered where it was asked; reject: the requester is told, with the
reason), through the platform the request came from. Bans and strikes go through moderation's `StrikeBook`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bots.conversation.platforms import reply_context
from bots.web.app import render_page
from bots.web.mod.auth import MODERATOR, moderator_only
from bots.web.mod.chart import holds_and_blocks_svg
from bots.web.mod.context import DASHBOARD
from bots.web.mod.queries import DAY_S, holds_and_blocks_per_day, user_record, users_with_records
from bots.web.sessions import get_session
from engine.requests import GeneratedImage
from moderation.errors import ReviewError
from moderation.review import ReviewItem

log = logging.getLogger(__name__)

FLASH = "mod_flash"
USER_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,15}:[A-Za-z0-9._-]{1,64}$")
MAX_REASON_CHARS = 500
BAN_LENGTHS = {"3600": 3600.0, "86400": 86400.0, "604800": 604800.0, "": None}
CHART_DAYS = 14


@dataclass(frozen=True)
class QueueEntry:
    item: ReviewItem
    images: tuple[GeneratedImage, ...]
    """For image-screening holds: the withheld images (shown blurred until clicked)."""


# ---- the review queue ---------------------------------------------------------------------------------------


@moderator_only
async def queue(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    items = await dashboard.admission().review.list(limit=100)  # pending, oldest first
    entries = [QueueEntry(item, await _withheld_images(request, item)) for item in items]
    return await _page(request, "queue", entries=entries)


@moderator_only
async def decide(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    moderator = request[MODERATOR]
    item_id, decision = request.match_info["item"], request.match_info["decision"]
    reason = _reason(await request.post())
    review = dashboard.admission().review
    try:
        if decision == "approve":
            await review.approve(item_id, moderator.key, reason)
        else:
            await review.reject(item_id, moderator.key, reason)
    except ReviewError as exc:  # already decided, expired, unknown: the message says which
        await _flash(request, str(exc))
        raise web.HTTPSeeOther("/mod") from None
    # As after a chat button: the desk acts on the decision now (delivers or tells the requester), exactly once.
    await dashboard.conversation().process_review_decisions()
    await _flash(request, f"{'Approved' if decision == 'approve' else 'Rejected'} {item_id}.")
    raise web.HTTPSeeOther("/mod")


@moderator_only
async def withheld_image(request: web.Request) -> web.StreamResponse:
    """The original of an image the output filter withheld: moderators only, never cached."""
    dashboard = request.app[DASHBOARD]
    try:
        item = await dashboard.admission().review.get(request.match_info["item"])
    except ReviewError:
        raise web.HTTPNotFound(text="No such image.") from None
    images = {str(image.index): image for image in await _withheld_images(request, item)}
    image = images.get(request.match_info["index"])
    if image is None or not image.original_path:
        raise web.HTTPNotFound(text="No such image.")
    try:
        body = await asyncio.to_thread(Path(image.original_path).read_bytes)
    except OSError:
        log.warning("withheld image of review item %s is missing on disk", item.id)
        raise web.HTTPNotFound(text="No such image.") from None
    return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": "no-store, private"})


async def _withheld_images(request: web.Request, item: ReviewItem) -> tuple[GeneratedImage, ...]:
    job_id = reply_context(item.request).flagged_job
    if not job_id:
        return ()
    record = await request.app[DASHBOARD].backend.engine.lookup(job_id)
    if record is None:
        return ()
    return tuple(image for image in record.images if image.withheld and image.original_path)


# ---- users --------------------------------------------------------------------------------------------------


@moderator_only
async def users(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    admission = dashboard.admission()
    now = dashboard.clock()
    since = now - admission.strikes.window_s
    wanted = request.query.get("user", "").strip()
    if wanted and not USER_KEY.match(wanted):
        await _flash(request, "A user looks like discord:1234 or slack:U0123.")
        wanted = ""
    keys = [wanted] if wanted else await users_with_records(admission.database, since)
    records = [await user_record(admission.database, key) for key in keys]
    return await _page(request, "users", records=records, wanted=wanted, since=since, now=now)


@moderator_only
async def user_action(request: web.Request) -> web.StreamResponse:
    dashboard = request.app[DASHBOARD]
    moderator = request[MODERATOR]
    strikes = dashboard.admission().strikes
    form = await request.post()
    user_key = str(form.get("user", "")).strip()
    if not USER_KEY.match(user_key):
        await _flash(request, "A user looks like discord:1234 or slack:U0123.")
        raise web.HTTPSeeOther("/mod/users")
    action, reason = request.match_info["action"], _reason(form)
    if action == "ban":
        length = str(form.get("duration", ""))
        if length not in BAN_LENGTHS:
            await _flash(request, "Choose how long the ban lasts.")
            raise web.HTTPSeeOther(f"/mod/users?user={user_key}")
        await strikes.ban(user_key, moderator.key, reason=reason, duration_s=BAN_LENGTHS[length])
        message = f"Banned {user_key}."
    elif action == "unban":
        lifted = await strikes.unban(user_key, moderator.key, reason)
        message = f"Lifted {lifted} ban(s) of {user_key}." if lifted else f"{user_key} was not banned."
    else:
        cleared = await strikes.clear_strikes(user_key, moderator.key)
        message = f"Cleared {cleared} strike(s) of {user_key}."
    await _flash(request, message)
    raise web.HTTPSeeOther(f"/mod/users?user={user_key}")


# ---- the audit log and the chart ----------------------------------------------------------------------------

AUDIT_FILTERS = ("actor", "action", "target", "outcome")


@moderator_only
async def audit(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    filters = {name: request.query.get(name, "").strip()[:200] for name in AUDIT_FILTERS}
    chosen = {name: value for name, value in filters.items() if value}
    entries = await dashboard.audit().entries(200, **chosen)
    return await _page(request, "audit", entries=entries, filters=filters)


@moderator_only
async def stats(request: web.Request) -> web.Response:
    dashboard = request.app[DASHBOARD]
    today = int(dashboard.clock() // DAY_S)
    since = (today - CHART_DAYS + 1) * DAY_S
    counts = await holds_and_blocks_per_day(dashboard.admission().database, since)
    chart = holds_and_blocks_svg(counts, days=CHART_DAYS, today=today)
    return await _page(request, "stats", chart=chart, counts=counts, days=CHART_DAYS)


# ---- shared -------------------------------------------------------------------------------------------------


async def _page(request: web.Request, page: str, **values: object) -> web.Response:
    """Render `mod/<page>.html` on the dashboard's layout, with the moderator and any message left for them."""
    session = await get_session(request)
    context = {"page": page, "moderator": request[MODERATOR], "flash": session.pop(FLASH, ""), **values}
    return await render_page(request, f"mod/{page}.html", context)


async def _flash(request: web.Request, text: str) -> None:
    (await get_session(request))[FLASH] = text


def _reason(form: Mapping[str, object]) -> str:
    """The moderator's reason or note, on one line and at most MAX_REASON_CHARS."""
    return " ".join(str(form.get("reason", "")).split())[:MAX_REASON_CHARS]
