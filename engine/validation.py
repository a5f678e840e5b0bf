"""Checking a request before it is queued, and fixing everything that decides its pixels.

`prepare_record` is what both the chat side (to refuse bad input before admission spends anything) and the queue
(before it journals a job) call. Pure functions, no I/O: every error is an `InvalidRequest` naming the bad value.
"""

from __future__ import annotations

import math
import re
import secrets
import time
import unicodedata
import uuid

from config.settings import EngineSettings
from engine import messages
from engine.errors import InvalidRequest
from engine.requests import MAX_IMAGE_STRENGTH, MAX_SEED, MIN_IMAGE_STRENGTH, GenerationRequest, JobState
from engine.store import JobRecord

MAX_IMAGES_PER_JOB = 8
MAX_SIDE = 2048
MAX_ASPECT_SIDE_RATIO = 4.0
ASPECT_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x]\s*(\d+(?:\.\d+)?)\s*$")
MAX_GUIDANCE = 30.0
SHOWN_VALUE_CHARS = 40
"""A refusal names the bad value, cut to this many characters: it has to fit in a chat message however long the
value was."""


def prepare_record(request: GenerationRequest, config: EngineSettings) -> JobRecord:
    """Validate a request against the settings and fix everything that decides its pixels (size, steps,
    seeds): the journaled record reproduces the same images after a restart. Raises InvalidRequest."""
    # An image prompt may come without words (a DM with only a picture): the picture says what to draw.
    prompt = clean_prompt(request.prompt, config.max_prompt_chars, required=request.image_prompt is None)
    negative = clean_prompt(request.negative_prompt, config.max_prompt_chars, "negative prompt", False)
    steps = config.steps if request.steps is None else request.steps
    if not 1 <= steps <= config.max_steps:
        raise InvalidRequest(messages.STEPS_RANGE.format(max_steps=config.max_steps, steps=steps))
    count = config.images_per_prompt if request.num_images is None else request.num_images
    if not 1 <= count <= MAX_IMAGES_PER_JOB:
        raise InvalidRequest(messages.IMAGE_COUNT_RANGE.format(max_images=MAX_IMAGES_PER_JOB, count=count))
    width, height = request.size or size_for_aspect(request.aspect, config.base_size)
    check_side("width", width)
    check_side("height", height)
    if request.variation is not None and not 0.0 <= request.variation.strength <= 1.0:
        raise InvalidRequest(messages.VARIATION_STRENGTH.format(strength=request.variation.strength))
    if request.image_prompt is not None:
        check_strength(request.image_prompt.strength)
    if request.guidance_scale is not None and not 0.0 <= request.guidance_scale <= MAX_GUIDANCE:
        raise InvalidRequest(messages.GUIDANCE_RANGE.format(max_guidance=MAX_GUIDANCE, guidance=request.guidance_scale))
    seed = check_seed(request.seed)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    seeds = tuple((seed + index) % (MAX_SEED + 1) for index in range(count))
    cleaned = GenerationRequest(
        prompt=prompt,
        requester=request.requester,
        negative_prompt=negative,
        seed=seed,
        aspect=request.aspect,
        steps=steps,
        num_images=count,
        size=(width, height),
        variation=request.variation,
        image_prompt=request.image_prompt,
        guidance_scale=request.guidance_scale,
        style=request.style,
        delivery=dict(request.delivery),
    )
    return JobRecord(
        id=uuid.uuid4().hex,
        request=cleaned,
        seeds=seeds,
        width=width,
        height=height,
        steps=steps,
        state=JobState.QUEUED,
        created_at=time.time(),
    )


def clean_prompt(text: str, max_chars: int, what: str = "prompt", required: bool = True) -> str:
    """Normalise Unicode (NFC), drop control characters and squeeze whitespace; reject empty or long text."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = " ".join(text.split())
    if required and not text:
        raise InvalidRequest(messages.EMPTY.format(what=what))
    if len(text) > max_chars:
        raise InvalidRequest(messages.TOO_LONG.format(what=what, length=len(text), limit=max_chars))
    return text


def parse_aspect(aspect: str) -> float:
    """'16:9' -> 1.777...; rejects zero, garbage and ratios beyond 4:1 either way."""
    match = ASPECT_PATTERN.match(aspect or "")
    if not match:
        raise InvalidRequest(messages.ASPECT_FORMAT.format(aspect=shown(aspect)))
    width, height = float(match.group(1)), float(match.group(2))
    if width <= 0 or height <= 0:
        raise InvalidRequest(messages.ASPECT_ZERO.format(aspect=shown(aspect)))
    ratio = width / height
    if not 1 / MAX_ASPECT_SIDE_RATIO <= ratio <= MAX_ASPECT_SIDE_RATIO:
        raise InvalidRequest(messages.ASPECT_RANGE.format(aspect=shown(aspect)))
    return ratio


def size_for_aspect(aspect: str, base_size: int) -> tuple[int, int]:
    """Keep about base_size² pixels at the given ratio, both sides multiples of 64 (1:1 -> base×base)."""
    ratio = parse_aspect(aspect)
    area = base_size * base_size
    width = max(64, round(math.sqrt(area * ratio) / 64) * 64)
    height = max(64, round(math.sqrt(area / ratio) / 64) * 64)
    return width, height


def check_strength(strength: float) -> float:
    """An image prompt's strength: a number from MIN_IMAGE_STRENGTH to MAX_IMAGE_STRENGTH."""
    number = isinstance(strength, int | float) and not isinstance(strength, bool)
    if not number or not MIN_IMAGE_STRENGTH <= strength <= MAX_IMAGE_STRENGTH:
        got = f"{strength:g}" if number else shown(str(strength))
        low, high = MIN_IMAGE_STRENGTH, MAX_IMAGE_STRENGTH
        raise InvalidRequest(messages.IMAGE_STRENGTH.format(low=low, high=high, strength=got))
    return float(strength)


def batch_key(record: JobRecord) -> str:
    """Jobs with equal keys can share one pipeline call: same size and steps, and the same kind of call (an image
    prompt runs the image-to-image pipeline, with one strength per call: image prompts batch only with each
    other). The Redis queue names its streams after this key."""
    key = f"{record.width}x{record.height}x{record.steps}"
    image_prompt = record.request.image_prompt
    return key if image_prompt is None else f"{key}xi{image_prompt.strength:g}"


def check_seed(seed: int | None) -> int | None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        digits = str(seed)
        shown_seed = digits if len(digits) <= SHOWN_VALUE_CHARS else shown(digits)
        raise InvalidRequest(messages.SEED_RANGE.format(max_seed=MAX_SEED, seed=shown_seed))
    return seed


def shown(value: str) -> str:
    """A user's value as a refusal quotes it (repr: control characters visible), at most SHOWN_VALUE_CHARS."""
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 1] + "…"


def check_side(name: str, value: int) -> None:
    if not isinstance(value, int) or value % 8 or not 64 <= value <= MAX_SIDE:
        raise InvalidRequest(messages.SIDE.format(name=name, max_side=MAX_SIDE, value=value))
