"""From a generated picture to the delivered file: screen it, withhold it if flagged, mark it, encode, write.

Runs in the worker's post-processing threads, one image per call, never on the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageFilter

from config.settings import Settings
from engine.postprocess import ImageContext, PostProcessor
from engine.provenance import ProvenancePostProcessor
from engine.requests import GeneratedImage
from engine.screening import ImageScreener

Withhold = Callable[[Image.Image], Image.Image]


def blur(image: Image.Image) -> Image.Image:
    """The default stand-in for a withheld image (moderation supplies its own: blur or placeholder)."""
    return image.filter(ImageFilter.GaussianBlur(radius=max(image.size) / 20))


class ImageFinisher:
    def __init__(
        self,
        postprocess: PostProcessor,
        output_dir: Path,
        screener: ImageScreener | None = None,
        withhold: Withhold = blur,
    ) -> None:
        self.postprocess = postprocess
        self.output_dir = output_dir
        self.screener = screener
        self.withhold = withhold

    def finish(self, image: Image.Image, context: ImageContext) -> GeneratedImage:
        """A flagged image is delivered withheld; the original is kept beside it for the moderators."""
        screening = self.screener(image) if self.screener else None
        original_path = None
        if screening is not None and screening.flagged:
            original = self.postprocess(image, context).jpeg
            original_path = self._write(f"{context.job_id}-{context.index}-withheld.jpg", original)
            image = self.withhold(image)
        processed = self.postprocess(image, context)
        path = self._write(f"{context.job_id}-{context.index}.jpg", processed.jpeg)
        return GeneratedImage(
            index=context.index,
            seed=context.seed,
            path=path,
            width=image.width,
            height=image.height,
            watermark_id=processed.watermark_id,
            withheld=original_path is not None,
            original_path=original_path,
            screening_reasons=tuple(screening.reasons) if screening else (),
        )

    def _write(self, name: str, data: bytes) -> str:
        """Write atomically: a crash leaves the old file or the new one, never half a JPEG."""
        path = self.output_dir / name
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        os.replace(partial, path)
        return str(path)


def build_postprocessor(settings: Settings) -> PostProcessor:
    """The service's post-processor: visible label, invisible watermark, AI metadata and the signed C2PA manifest
    (`settings.provenance`; the development signing pair, if used, lives in `settings.engine.cache_dir`)."""
    return ProvenancePostProcessor(settings.provenance, settings.engine.jpeg_quality, settings.engine.cache_dir)
