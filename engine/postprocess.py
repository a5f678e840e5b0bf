"""Post-processing: one generated image in, the delivered JPEG bytes out.

The engine calls a `PostProcessor` in its post-processing thread pool (never on the event loop), so it may be
slow and CPU-bound. `build_postprocessor(settings)` returns the one the service uses: `engine.provenance`'s,
which adds the visible label, the invisible watermark and the AI metadata.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from config.settings import Settings


@dataclass(frozen=True)
class ImageContext:
    """What post-processing may know about one image."""

    job_id: str
    index: int
    seed: int
    prompt: str
    model: str


@dataclass(frozen=True)
class ProcessedImage:
    jpeg: bytes
    watermark_id: str | None = None
    """The payload embedded in the invisible watermark (hex), recorded by the job store for `imagine verify`."""


class PostProcessor(Protocol):
    def __call__(self, image: Image.Image, context: ImageContext) -> ProcessedImage: ...


def encode_jpeg(image: Image.Image, quality: int = 90, **save_options: object) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, **save_options)
    return buffer.getvalue()


class PlainJpeg:
    """Encode only: the baseline the benchmarks compare against."""

    def __init__(self, quality: int = 90) -> None:
        self.quality = quality

    def __call__(self, image: Image.Image, context: ImageContext) -> ProcessedImage:
        return ProcessedImage(jpeg=encode_jpeg(image, self.quality))


def build_postprocessor(settings: Settings) -> PostProcessor:
    """The service's post-processor: visible label, invisible watermark, AI metadata and the signed C2PA manifest
    (`settings.provenance`; the development signing pair, if used, lives in `settings.engine.cache_dir`)."""
    from engine.provenance import ProvenancePostProcessor  # imported here: it builds on this module's types

    return ProvenancePostProcessor(settings.provenance, settings.engine.jpeg_quality, settings.engine.cache_dir)
