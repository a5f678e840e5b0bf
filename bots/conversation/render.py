"""What the conversation shows, as platform-neutral messages and buttons (adapters draw them)."""

from __future__ import annotations

from bots import messages
from bots.buttons import Action, Button, Style
from bots.contract import Attachment, Delivery
from engine.api import JobRecord
from engine.requests import GeneratedImage


def cancel_buttons(job_id: str) -> tuple[Button, ...]:
    return (Button(Action.CANCEL, job_id, label=messages.CANCEL_LABEL, style=Style.DANGER),)


def review_buttons(item_id: str) -> tuple[Button, ...]:
    return (
        Button(Action.APPROVE, item_id, label=messages.APPROVE_LABEL, style=Style.SUCCESS),
        Button(Action.REJECT, item_id, label=messages.REJECT_LABEL, style=Style.DANGER),
    )


def image_buttons(job_id: str, count: int) -> tuple[tuple[Button, ...], ...]:
    upscale = tuple(Button(Action.UPSCALE, job_id, i, label=messages.upscale_label(i)) for i in range(count))
    variations = tuple(Button(Action.VARIATION, job_id, i, label=messages.variation_label(i)) for i in range(count))
    reroll = Button(Action.REROLL, job_id, label=messages.REROLL_LABEL, style=Style.PRIMARY)
    return upscale, variations, (reroll, _delete(job_id))


def _delete(job_id: str) -> Button:
    return Button(Action.DELETE, job_id, label=messages.DELETE_LABEL, style=Style.DANGER)


def images_message(record: JobRecord) -> Delivery:
    attachments = tuple(_attachment(record, image) for image in record.images)
    withheld = sum(1 for image in record.images if image.withheld)
    return Delivery(
        job_id=record.id,
        text=messages.delivery_text(
            record.request.prompt, [image.seed for image in record.images], withheld, record.request.style
        ),
        attachments=attachments,
        button_rows=image_buttons(record.id, len(record.images)),
    )


def single_image_message(record: JobRecord, index: int) -> Delivery:
    image = record.images[index]
    variation = Button(Action.VARIATION, record.id, index, label=messages.variation_label(index))
    return Delivery(
        job_id=record.id,
        text=messages.upscale_text(record.request.prompt, index, image.seed),
        attachments=(_attachment(record, image),),
        button_rows=((variation, _delete(record.id)),),  # Delete here takes down this message and the job's files
    )


def _attachment(record: JobRecord, image: GeneratedImage) -> Attachment:
    return Attachment(
        filename=f"imagine-{record.id[:8]}-{image.index + 1}.jpg",
        path=image.path,
        width=image.width,
        height=image.height,
    )
