"""The hook through which output images are screened before anyone sees them (moderation implements it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class ScreeningResult:
    flagged: bool
    reasons: tuple[str, ...] = ()


class ImageScreener(Protocol):
    """Called in the post-processing thread pool, one image at a time; may be slow, must be thread-safe."""

    def __call__(self, image: Image.Image) -> ScreeningResult: ...
