"""What goes into the engine and what comes out: requests, per-image results, progress events, job states."""

from __future__ import annotations

import enum
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidRequest

MAX_SEED = 2**32 - 1
MAX_ASPECT_SIDE_RATIO = 4.0
ASPECT_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x]\s*(\d+(?:\.\d+)?)\s*$")


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DELIVERED = "delivered"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.DELIVERED)


@dataclass(frozen=True)
class Requester:
    """Who asked, and where: enough to rate-limit, to moderate and to find the user again after a restart."""

    platform: str
    user_id: str
    server_id: str = ""
    channel_id: str = ""
    display_name: str = ""

    @property
    def key(self) -> str:
        """The identity used for fairness and limits: one user on one platform."""
        return f"{self.platform}:{self.user_id}"


LOCAL_USER = Requester(platform="cli", user_id="local")


@dataclass(frozen=True)
class Variation:
    """Make images close to one earlier image: its seed's noise, nudged by `strength` of fresh noise."""

    parent_seed: int
    strength: float = 0.25


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    requester: Requester = LOCAL_USER
    negative_prompt: str = ""
    seed: int | None = None
    """Seed of the first image; image i uses seed + i. None: chosen at random and recorded."""
    aspect: str = "1:1"
    steps: int | None = None
    num_images: int | None = None
    size: tuple[int, int] | None = None
    """Explicit (width, height), overriding `aspect`; for tests and benchmarks."""
    variation: Variation | None = None
    delivery: dict[str, Any] = field(default_factory=dict)
    """Opaque, JSON-serialisable platform context for replying (channel, thread, interaction token...). It is
    journaled with the job so that a restarted adapter can still deliver."""


@dataclass(frozen=True)
class GeneratedImage:
    index: int
    seed: int
    path: str
    width: int
    height: int
    watermark_id: str | None = None
    withheld: bool = False
    """True when image screening flagged it: `path` then holds the blurred/placeholder version delivered to
    users, `original_path` the real image kept for moderators."""
    original_path: str | None = None
    screening_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Timings:
    queue_wait_s: float = 0.0
    generate_s: float = 0.0
    postprocess_s: float = 0.0


@dataclass(frozen=True)
class JobResult:
    job_id: str
    images: tuple[GeneratedImage, ...]
    timings: Timings = Timings()

    @property
    def flagged(self) -> bool:
        return any(image.withheld for image in self.images)


@dataclass(frozen=True)
class ProgressEvent:
    """What a job's listeners hear: a state change, a queue position change or a denoising step."""

    job_id: str
    state: JobState
    position: int | None = None
    step: int = 0
    total_steps: int = 0
    error_kind: str | None = None
    error: str | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


def clean_prompt(text: str, max_chars: int, what: str = "prompt", required: bool = True) -> str:
    """Normalise Unicode (NFC), drop control characters and squeeze whitespace; reject empty or long text."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = " ".join(text.split())
    if required and not text:
        raise InvalidRequest(f"{what} must not be empty")
    if len(text) > max_chars:
        raise InvalidRequest(f"{what} is too long: {len(text)} characters, the limit is {max_chars}")
    return text


def parse_aspect(aspect: str) -> float:
    """'16:9' -> 1.777...; rejects zero, garbage and ratios beyond 4:1 either way."""
    match = ASPECT_PATTERN.match(aspect or "")
    if not match:
        raise InvalidRequest(f"aspect must look like W:H (e.g. 16:9), got {aspect!r}")
    width, height = float(match.group(1)), float(match.group(2))
    if width <= 0 or height <= 0:
        raise InvalidRequest(f"aspect sides must be greater than 0, got {aspect!r}")
    ratio = width / height
    if not 1 / MAX_ASPECT_SIDE_RATIO <= ratio <= MAX_ASPECT_SIDE_RATIO:
        raise InvalidRequest(f"aspect must be between 1:4 and 4:1, got {aspect!r}")
    return ratio


def size_for_aspect(aspect: str, base_size: int) -> tuple[int, int]:
    """Keep about base_size² pixels at the given ratio, both sides multiples of 64 (1:1 -> base×base)."""
    ratio = parse_aspect(aspect)
    area = base_size * base_size
    width = max(64, round(math.sqrt(area * ratio) / 64) * 64)
    height = max(64, round(math.sqrt(area / ratio) / 64) * 64)
    return width, height


def check_seed(seed: int | None) -> int | None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    return seed
