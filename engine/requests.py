"""What goes into the engine and what comes out: requests, per-image results, progress events, job states."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

MAX_SEED = 2**32 - 1


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
class ImagePrompt:
    """Start from a picture instead of pure noise (img2img): the checked input image, stored as a PNG at the job's
    size by the chat side (engine/input_images.py) in a folder the workers share, and how much of it to redraw
    (0.1: a light touch, 1.0: little of the input is left)."""

    path: str
    strength: float


MIN_IMAGE_STRENGTH, MAX_IMAGE_STRENGTH = 0.1, 1.0


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
    image_prompt: ImagePrompt | None = None
    guidance_scale: float | None = None
    """Classifier-free guidance for this job; None: `engine.guidance_scale` (style presets set it)."""
    style: str = ""
    """The style preset the prompt was made with (already applied to prompt, negative prompt and steps)."""
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
    images: tuple[GeneratedImage, ...] = ()
    """On `done`: the images, by reference (their paths), never their pixels."""
    timings: Timings | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0
