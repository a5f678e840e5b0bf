"""Post-processing: one generated image in, the delivered JPEG bytes out.

The worker calls a `PostProcessor` in its post-processing thread pool (never on the event loop), so it may be
slow and CPU-bound. The one the service uses is `engine.provenance`'s (visible label, invisible watermark, AI
metadata), built by `engine.worker.finishing.build_postprocessor`. These are plain types, no torch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class ImageContext:
    """What post-processing may know about one image."""

    job_id: str
    index: int
    seed: int
    prompt: str
    model: str
    from_image: bool = False
    """Made from an image prompt (a picture given as the starting point): the metadata says so."""


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
