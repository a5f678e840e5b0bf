"""The playground at `/`: the third front door, beside Discord and Slack, on the same conversation, admission and
engine. A browser session is a visitor (bots/web/visitors.py) rate-limited and moderated like a chat user; its
prompts are `Conversation.imagine` calls and its buttons `Conversation.press` calls, answered through
`PlaygroundReplier` (bots/web/playground_replier.py).

Pages (server-rendered, bots/web/templates/playground/; one small script, static/playground.js):
- `GET /`: the prompt box (negative prompt, seed, aspect, style, an image to start from and its strength folded
  away), notices, the session's recent jobs;
- `POST /imagine` (a form, multipart when it carries an image): a prompt; a job → 303 to its page; a refusal or a
  hold → the start page saying so plainly (400 refused, 202 held for review), in the chat's words. The style and
  the uploaded image go to the conversation as chat's do (`ImagineCommand.style`, `ImageSource(data=...)`): the
  same style presets, the same checks of the picture before any GPU time; a body over the upload limit is
  refused before it is read (bots/web/app.py);
- `GET /jobs/{id}`: the job: queue position and per-step progress, live through `GET /jobs/{id}/events`
  (server-sent events: `status` fragments, then one `result` fragment), then the four images, each with its
  seed, a download link and U/V buttons, and 🔄;
- `GET /jobs/{id}/images/{n}.jpg` (`?download=1`: as an attachment) and `GET /jobs/{id}/images/{n}` (that image
  alone, what U answers with);
- `POST /press`: a button's custom id (`imagine:v:<job>:2`), exactly as chat buttons carry it; Delete
  (`imagine:d:<job>`) takes the job's images down, by its owner or a moderator signed in to /mod in this browser,
  and its page says so from then on.
Only the session that asked for a job sees it, its images and its buttons: anyone else gets a 404 that does not say
whether the job exists. Job ids are random (uuid4), and the check is made on every request all the same.

Lifecycle (bots/service.py): `Playground(settings)` and `mount(app)` before the web server starts (its pages say
"starting" until then); `start(conversation)` registers the platform `web` once the conversation exists;
`close()` ends the open event streams before the server closes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp.web_request import FileField
from aiohttp_session import Session, get_session
from aiohttp_sse import EventSourceResponse, sse_response

from bots import messages
from bots.buttons import Action, Button, parse_button
from bots.conversation import Conversation, ImageSource, ImagineCommand
from bots.errors import BadButton
from bots.web.app import error_page, render_page
from bots.web.csrf import SESSION_KEY as CSRF_SESSION_KEY
from bots.web.csrf import csrf_field
from bots.web.mod.auth import signed_in_moderator
from bots.web.playground_replier import Board, Place, PlaygroundReplier, released_originals
from bots.web.playground_views import HistoryRow, JobView, history_row, job_view
from bots.web.visitors import (
    PLATFORM,
    forget_held,
    held_prompts,
    known_visitor,
    owns,
    recent_jobs,
    remember_held,
    remember_job,
    visitor,
)
from config.settings import Settings
from engine.api import JobHandle, JobRecord
from engine.requests import MAX_SEED, Requester

log = logging.getLogger(__name__)

ASPECTS = ("1:1", "16:9", "9:16", "3:2", "2:3", "4:3", "3:4")
JOB_ID = r"{job_id:[0-9A-Za-z-]{1,64}}"
STREAM_POLL_S = 2.0
"""A job this process does not follow (queued by another frontend, or between a restart and its resumption) is
looked up this often while a page watches it."""
STREAM_PING_S = 15.0
UPLOAD_TYPES = ("image/jpeg", "image/png", "image/webp")
"""What the file picker offers (a hint to the browser: the bytes are checked whatever they claim to be)."""
IMAGE_CACHE = "private, max-age=86400"
"""A job's images never change; only this browser may keep them."""


class Playground:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.board = Board()
        self._conversation: Conversation | None = None
        self._app: web.Application | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        """The handlers of open event streams: close() ends them (they would hold the server's shutdown)."""

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def mount(self, app: web.Application) -> None:
        self._app = app
        app.router.add_get("/", self.index)
        app.router.add_post("/imagine", self.imagine)
        app.router.add_post("/press", self.press)
        app.router.add_get(f"/jobs/{JOB_ID}", self.job_page)
        app.router.add_get(f"/jobs/{JOB_ID}/events", self.job_events)
        app.router.add_get(f"/jobs/{JOB_ID}/images/{{index:\\d{{1,2}}}}.jpg", self.image_file)
        app.router.add_get(f"/jobs/{JOB_ID}/images/{{index:\\d{{1,2}}}}", self.image_page)

    async def start(self, conversation: Conversation) -> None:
        """Register the platform: from now on the conversation answers visitors, resumed jobs included."""
        self._conversation = conversation
        conversation.add_platform(PLATFORM, self.replier_for)
        log.info("web: the playground is open at /")

    async def close(self) -> None:
        self._conversation = None
        for task in list(self._streams):
            task.cancel()
        if self._streams:
            await asyncio.gather(*self._streams, return_exceptions=True)

    def replier_for(self, place: dict[str, Any]) -> PlaygroundReplier:
        conversation = self._conversation
        if conversation is None:
            raise RuntimeError("Playground.start() first")
        return PlaygroundReplier(self.board, Place.from_dict(place), conversation.jobs)

    # ---- pages -------------------------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        conversation = self._running()
        if conversation is None:
            return await error_page(request, 503, messages.WEB_STARTING)
        session = await get_session(request)
        return await self._front_page(request, session, visitor(session))

    async def imagine(self, request: web.Request) -> web.Response:
        conversation = self._running()
        if conversation is None:
            return await error_page(request, 503, messages.WEB_STARTING)
        session = await get_session(request)
        who = visitor(session)
        form = await request.post()
        entered = {name: _text(form.get(name)) for name in FORM_FIELDS}
        seed, problem = _seed(entered["seed"])
        strength, strength_problem = _strength(entered["strength"])
        if problem or strength_problem:
            refusal = problem or strength_problem
            return await self._front_page(request, session, who, entered=entered, refusal=refusal, status=400)
        place = Place(who.user_id, uuid.uuid4().hex)
        replier = PlaygroundReplier(self.board, place, conversation.jobs, answering=True)
        command = ImagineCommand(
            prompt=entered["prompt"],
            requester=who,
            negative_prompt=entered["negative"],
            seed=seed,
            aspect=entered["aspect"] or "1:1",
            style=entered["style"],
            place=place.to_dict(),
            image=await _uploaded_image(form.get("image")),
            strength=strength,
        )
        try:
            job_id = await conversation.imagine(command, replier)
        except Exception:  # nothing a visitor sends may take the page down with a trace: log it, say sorry
            log.exception("web: a prompt failed")
            return await error_page(request, 500, messages.SOMETHING_WENT_WRONG)
        finally:
            replier.done_answering()
        if job_id is not None:
            remember_job(session, job_id)
            raise web.HTTPSeeOther(f"/jobs/{job_id}")
        if replier.refusals:
            return await self._front_page(
                request, session, who, entered=entered, refusal=replier.refusals[-1], status=400
            )
        remember_held(session, place.ticket, command.prompt)
        held = replier.statuses[-1] if replier.statuses else messages.WAITING_FOR_REVIEW
        return await self._front_page(request, session, who, held=held, status=202)

    async def job_page(self, request: web.Request) -> web.Response:
        conversation = self._running()
        if conversation is None:
            return await error_page(request, 503, messages.WEB_STARTING)
        session = await get_session(request)
        who = visitor(session)
        record = await self._owned_job(conversation, request, who)
        if record is None:
            return await error_page(request, 404, messages.WEB_NOT_FOUND)
        return await self._job_page(request, session, who, conversation, record)

    async def image_page(self, request: web.Request) -> web.Response:
        """One image alone (what U answers with): large, its seed, its download and its V button."""
        conversation = self._running()
        if conversation is None:
            return await error_page(request, 503, messages.WEB_STARTING)
        session = await get_session(request)
        who = visitor(session)
        record = await self._owned_job(conversation, request, who)
        index = int(request.match_info["index"])
        view = job_view(record) if record is not None else None
        if view is None or not 0 <= index < len(view.images):
            return await error_page(request, 404, messages.WEB_NOT_FOUND)
        notices = self.board.take_notices(who.user_id)
        context = {"job": view, "image": view.images[index], "notices": notices, "refusal": "", "held": ""}
        return await render_page(request, "playground/image.html", context)

    async def image_file(self, request: web.Request) -> web.StreamResponse:
        conversation = self._running()
        who = known_visitor(await get_session(request))
        record = await self._owned_job(conversation, request, who) if conversation and who else None
        index = int(request.match_info["index"])
        if record is None or record.deleted or not 0 <= index < len(record.images):
            raise web.HTTPNotFound(text=messages.WEB_NOT_FOUND)
        image = record.images[index]
        path = image.path  # a withheld image's is its blurred copy: the original only once a moderator released it
        if image.withheld and image.original_path and released_originals(record):
            path = image.original_path
        if not await asyncio.to_thread(Path(path).is_file):
            raise web.HTTPNotFound(text=messages.UNKNOWN_JOB)
        headers = {"Cache-Control": IMAGE_CACHE, "Content-Type": "image/jpeg"}
        if request.query.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="imagine-{record.id[:8]}-{index + 1}.jpg"'
        return web.FileResponse(path, headers=headers)

    async def press(self, request: web.Request) -> web.Response:
        """A button, as chat buttons are pressed: U (that image alone), V (variations), 🔄, Cancel."""
        conversation = self._running()
        if conversation is None:
            return await error_page(request, 503, messages.WEB_STARTING)
        session = await get_session(request)
        who = visitor(session)
        custom_id = _text((await request.post()).get("button"))
        try:
            button = parse_button(custom_id)
        except BadButton:
            return await error_page(request, 400, messages.UNKNOWN_BUTTON)
        record = await conversation.jobs.lookup(button.target) if button.action in JOB_ACTIONS else None
        moderator = button.action is Action.DELETE and await signed_in_moderator(request) is not None
        if button.action in JOB_ACTIONS and not _may_press(record, who, moderator):
            return await error_page(request, 404, messages.WEB_NOT_FOUND)
        place = Place(who.user_id, uuid.uuid4().hex)
        replier = PlaygroundReplier(self.board, place, conversation.jobs, answering=True)
        try:
            job_id = await conversation.press(custom_id, who, replier, is_moderator=moderator, place=place.to_dict())
        except Exception:
            log.exception("web: button %.100r failed", custom_id)
            return await error_page(request, 500, messages.SOMETHING_WENT_WRONG)
        finally:
            replier.done_answering()
        return await self._after_press(request, session, who, conversation, button, record, replier, job_id)

    async def _after_press(
        self,
        request: web.Request,
        session: Session,
        who: Requester,
        conversation: Conversation,
        button: Button,
        record: JobRecord | None,
        replier: PlaygroundReplier,
        job_id: str | None,
    ) -> web.Response:
        if job_id is not None:  # V or 🔄 started a job
            remember_job(session, job_id)
            raise web.HTTPSeeOther(f"/jobs/{job_id}")
        if replier.deliveries and button.action is Action.UPSCALE:
            raise web.HTTPSeeOther(f"/jobs/{button.target}/images/{button.index or 0}")
        if record is None:  # not a job's button (approve/reject are for moderators): refused above or here
            return await error_page(request, 403, replier.refusals[-1] if replier.refusals else messages.UNKNOWN_BUTTON)
        if button.action is Action.DELETE and replier.deleted:  # its page says the images were deleted
            raise web.HTTPSeeOther(f"/jobs/{record.id}")
        if replier.refusals:
            return await self._job_page(request, session, who, conversation, record, refusal=replier.refusals[-1])
        if replier.statuses:  # the new prompt is held for review
            remember_held(session, replier.place.ticket, record.request.prompt)
            return await self._job_page(request, session, who, conversation, record, held=replier.statuses[-1])
        raise web.HTTPSeeOther(f"/jobs/{record.id}")  # cancelled: its page shows it

    # ---- the live stream ---------------------------------------------------------------------------------

    async def job_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events for one job: `status` (an HTML fragment: position, step k/n) on every change,
        then `result` (the images) once, and the stream ends."""
        conversation = self._running()
        session = await get_session(request)
        who = known_visitor(session)
        record = await self._owned_job(conversation, request, who) if conversation and who else None
        if conversation is None or record is None:
            raise web.HTTPNotFound(text=messages.WEB_NOT_FOUND)
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        token = str(session.get(CSRF_SESSION_KEY) or "")  # read only: a stream cannot set a cookie
        try:
            async with sse_response(
                request, headers={"Cache-Control": "no-store"}, ping_interval=STREAM_PING_S
            ) as stream:
                try:
                    await self._stream_job(conversation, stream, record, token)
                except ConnectionResetError:  # the browser went away
                    pass
        finally:
            self._streams.discard(task)
        return stream

    async def _stream_job(
        self, conversation: Conversation, stream: EventSourceResponse, record: JobRecord, token: str
    ) -> None:
        handle = await _handle(conversation, record.id)
        if handle is not None:  # followed in this process: every position change and every step
            async for event in handle.events():
                if event.state.finished:
                    break
                await stream.send(
                    self._fragment("playground/_status.html", job_view(record, event), token), event="status"
                )
        shown = ""
        while stream.is_connected():  # elsewhere, or finished: the journal says where it stands
            latest = await conversation.jobs.lookup(record.id)
            if latest is None:
                return
            view = job_view(latest)
            if view.finished:
                await stream.send(self._fragment("playground/_result.html", view, token), event="result")
                return
            if view.status != shown:
                await stream.send(self._fragment("playground/_status.html", view, token), event="status")
                shown = view.status
            await asyncio.sleep(STREAM_POLL_S)

    def _fragment(self, template: str, job: JobView, token: str) -> str:
        environment = aiohttp_jinja2.get_env(self._app_of_templates)
        return environment.get_template(template).render(job=job, csrf_field=lambda: csrf_field(token))

    # ---- helpers -----------------------------------------------------------------------------------------

    def _running(self) -> Conversation | None:
        return self._conversation

    async def _owned_job(
        self, conversation: Conversation | None, request: web.Request, who: Requester | None
    ) -> JobRecord | None:
        """The job named in the path, if it is this visitor's; None for an unknown job and for someone else's
        alike, so that nobody learns which ids exist."""
        if conversation is None or who is None:
            return None
        record = await conversation.jobs.lookup(request.match_info["job_id"])
        return record if record is not None and owns(record.request.requester, who) else None

    async def _front_page(
        self,
        request: web.Request,
        session: Session,
        who: Requester,
        *,
        entered: dict[str, str] | None = None,
        refusal: str = "",
        held: str = "",
        status: int = 200,
    ) -> web.Response:
        context = await self._page_context(session, who, entered=entered, refusal=refusal, held=held)
        return await render_page(request, "playground/index.html", context, status=status)

    async def _job_page(
        self,
        request: web.Request,
        session: Session,
        who: Requester,
        conversation: Conversation,
        record: JobRecord,
        *,
        refusal: str = "",
        held: str = "",
    ) -> web.Response:
        handle = None if record.state.finished else await _handle(conversation, record.id)
        view = job_view(record, handle.snapshot() if handle is not None else None)
        context = await self._page_context(session, who, refusal=refusal, held=held, shown=record.id)
        context["job"] = view
        status = 400 if refusal else 202 if held else 200
        return await render_page(request, "playground/job.html", context, status=status)

    async def _page_context(
        self,
        session: Session,
        who: Requester,
        *,
        entered: dict[str, str] | None = None,
        refusal: str = "",
        held: str = "",
        shown: str = "",
    ) -> dict[str, Any]:
        """`shown`: the job the page is about, left out of its history (the page shows it live)."""
        history = [row for row in await self._history(session, who) if row.url != f"/jobs/{shown}"]
        return {
            "entered": entered or dict.fromkeys(FORM_FIELDS, "") | {"aspect": "1:1"},
            "aspects": ASPECTS,
            "styles": self._style_choices(),
            "image_types": ",".join(UPLOAD_TYPES),
            "refusal": refusal,
            "held": held,
            "notices": self.board.take_notices(who.user_id),
            "history": history,
        }

    def _style_choices(self) -> list[tuple[str, str]]:
        """(name, label) of the configured style presets, for the form's select."""
        conversation = self._running()
        if conversation is None:
            return []
        return [(name, conversation.styles.label(name)) for name in conversation.styles.names]

    async def _history(self, session: Session, who: Requester) -> list[HistoryRow]:
        """The session's held prompts (or the jobs they became, once approved), then its recent jobs."""
        conversation = self._running()
        if conversation is None:
            return []
        rows: list[HistoryRow] = []
        for held in held_prompts(session):
            became = self.board.job_of(held.ticket)
            if became is not None:
                forget_held(session, held.ticket)
                remember_job(session, became)
                continue
            said = self.board.said_about(held.ticket) or messages.WEB_WAITING_FOR_REVIEW
            rows.append(HistoryRow("", held.prompt, "🕓 held", note=said))
        for job_id in recent_jobs(session):
            record = await conversation.jobs.lookup(job_id)
            if record is not None and owns(record.request.requester, who):
                rows.append(history_row(record))
        return rows

    @property
    def _app_of_templates(self) -> web.Application:
        if self._app is None:
            raise RuntimeError("Playground.mount(app) first")
        return self._app


JOB_ACTIONS = frozenset({Action.UPSCALE, Action.VARIATION, Action.REROLL, Action.CANCEL, Action.DELETE})
FORM_FIELDS = ("prompt", "negative", "seed", "aspect", "style", "strength")


def _may_press(record: JobRecord | None, who: Requester, moderator: bool) -> bool:
    """A job's buttons are its owner's; Delete also a moderator's, for the playground's jobs (a chat's job is
    deleted in its chat, where the message is)."""
    if record is None:
        return False
    requester = record.request.requester
    return owns(requester, who) or (moderator and requester.platform == PLATFORM)


async def _handle(conversation: Conversation, job_id: str) -> JobHandle | None:
    """The job's live handle when this process follows it (queue position, steps)."""
    for handle in await conversation.jobs.active(PLATFORM):
        if handle.id == job_id:
            return handle
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


async def _uploaded_image(field: object) -> ImageSource | None:
    """The uploaded picture's bytes, or None when the form carried none (a file input left empty sends an empty
    part). Nothing is judged here: the conversation checks the bytes as it checks a chat attachment's."""
    if not isinstance(field, FileField):
        return None
    data = await asyncio.to_thread(field.file.read)  # aiohttp spooled the part to a temporary file
    return ImageSource(data=data) if data or field.filename else None


def _strength(text: str) -> tuple[float | None, str]:
    """The strength field: empty (the configured default), or a number (its range is the conversation's to check,
    as for chat's); otherwise the refusal to show."""
    text = text.strip()
    if not text:
        return None, ""
    try:
        return float(text), ""
    except ValueError:
        shown = text if len(text) <= 40 else text[:39] + "…"
        return None, messages.invalid_request(messages.WEB_STRENGTH_NOT_A_NUMBER.format(strength=shown))


def _seed(text: str) -> tuple[int | None, str]:
    """The seed field: empty (random), or a whole number; otherwise the refusal to show."""
    text = text.strip()
    if not text:
        return None, ""
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_SEED)) + 2:
        shown = text if len(text) <= 40 else text[:39] + "…"
        return None, messages.invalid_request(messages.WEB_SEED_NOT_A_NUMBER.format(max_seed=MAX_SEED, seed=shown))
    return int(text), ""
