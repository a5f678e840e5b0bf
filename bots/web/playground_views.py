"""What the playground's templates show of a job, built from the journaled record and where the job stands now.

The words are the chat's (bots/messages.py: the same status line, the same "prompt — seeds" caption) and the
buttons are the chat's (bots/conversation/render.py: U1–U4, V1–V4, 🔄, 🗑️ Delete, Cancel), drawn as forms that
post their custom id to /press. A deleted job shows that it was, and nothing of its images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bots import messages
from bots.buttons import Action, Button
from bots.conversation.render import cancel_buttons, image_buttons
from bots.web.playground_replier import released_originals
from engine.api import JobRecord
from engine.requests import JobState, ProgressEvent

STATE_LABELS = {
    JobState.QUEUED: "⏳ queued",
    JobState.RUNNING: "🎨 running",
    JobState.DONE: "✅ done",
    JobState.DELIVERED: "✅ done",
    JobState.FAILED: "⚠️ failed",
    JobState.CANCELLED: "🚫 cancelled",
}
DELETED_LABEL = "🗑️ deleted"
HISTORY_PROMPT_CHARS = 80


@dataclass(frozen=True)
class ImageView:
    index: int
    seed: int
    width: int
    height: int
    withheld: bool
    upscale: Button
    variation: Button

    def url(self, job_id: str) -> str:
        return f"/jobs/{job_id}/images/{self.index}.jpg"

    def download_url(self, job_id: str) -> str:
        return f"{self.url(job_id)}?download=1"

    def page_url(self, job_id: str) -> str:
        return f"/jobs/{job_id}/images/{self.index}"


@dataclass(frozen=True)
class JobView:
    id: str
    prompt: str
    negative_prompt: str
    state: JobState
    status: str
    """The chat's status line: queued at position N, step k of n, done, failed or cancelled."""
    step: int = 0
    total_steps: int = 0
    caption: str = ""
    """Once done: the chat's "prompt — seeds" line, with a note when images were withheld."""
    images: tuple[ImageView, ...] = ()
    cancel: tuple[Button, ...] = ()
    reroll: tuple[Button, ...] = field(default_factory=tuple)
    """🔄, and 🗑️ Delete once there are images."""
    style: str = ""
    """The style preset it was drawn in ("" for none): `prompt` is the styled prompt, as moderation saw it."""
    strength: float | None = None
    """For an image prompt: how much of the uploaded picture was redrawn."""
    deleted: bool = False

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def events_url(self) -> str:
        return f"/jobs/{self.id}/events"


@dataclass(frozen=True)
class HistoryRow:
    url: str
    prompt: str
    label: str
    thumbnail: str = ""
    note: str = ""


def job_view(record: JobRecord, now: ProgressEvent | None = None) -> JobView:
    """`now`: where the job stands in the queue (position, step), when this process follows it."""
    request = record.request
    about = JobView(  # what was asked: the same at every stage
        id=record.id,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        state=record.state,
        status="",
        style=request.style,
        strength=request.image_prompt.strength if request.image_prompt is not None else None,
    )
    if record.deleted:
        return replace(about, status=messages.WEB_DELETED, deleted=True)
    if not record.state.finished:
        event = now if now is not None and not now.state.finished else ProgressEvent(record.id, record.state)
        return replace(
            about,
            state=event.state,
            status=messages.status(event, request.prompt),
            step=event.step,
            total_steps=event.total_steps,
            cancel=cancel_buttons(record.id),
        )
    ended = ProgressEvent(record.id, record.state, error_kind=record.error_kind)
    images: tuple[ImageView, ...] = ()
    caption = ""
    reroll: tuple[Button, ...] = ()
    if record.images:
        upscales, variations, reroll = image_buttons(record.id, len(record.images))
        released = released_originals(record)
        images = tuple(
            ImageView(image.index, image.seed, image.width, image.height, image.withheld and not released, up, vary)
            for image, up, vary in zip(record.images, upscales, variations, strict=True)
        )
        withheld = sum(1 for image in images if image.withheld)
        seeds = [image.seed for image in record.images]
        caption = messages.delivery_text(request.prompt, seeds, withheld, request.style)
    elif record.state is not JobState.DONE:  # a failed or cancelled job can be asked again; it has nothing to delete
        reroll = tuple(button for button in image_buttons(record.id, 0)[2] if button.action is Action.REROLL)
    return replace(
        about,
        status=messages.status(ended, request.prompt),
        caption=caption,
        images=images,
        reroll=reroll,
    )


def history_row(record: JobRecord) -> HistoryRow:
    prompt = record.request.prompt
    shown = prompt if len(prompt) <= HISTORY_PROMPT_CHARS else prompt[: HISTORY_PROMPT_CHARS - 1] + "…"
    if record.deleted:
        return HistoryRow(f"/jobs/{record.id}", shown, DELETED_LABEL)
    thumbnail = f"/jobs/{record.id}/images/0.jpg" if record.images else ""
    return HistoryRow(f"/jobs/{record.id}", shown, STATE_LABELS.get(record.state, record.state.value), thumbnail)
