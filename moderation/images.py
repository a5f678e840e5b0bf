"""Output image screening (the engine's `ImageScreener` hook) and the withheld version users see instead.

    screener = NudityScreener.from_settings(settings.moderation)   # classes/threshold from the policy file
    result = screener(image)            # ScreeningResult(flagged, reasons); blocking, thread-safe
    shown = withheld_version(image, settings.moderation.withheld_image)   # "blur" | "placeholder"

The detector is NudeNet's 320n model, bundled in the `nudenet` wheel and run on onnxruntime, offline. It is
loaded on first use (under a lock); onnxruntime sessions may be run from several threads at once, which is
how the engine's post-processing pool calls it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from config.settings import ModerationSettings
from engine.screening import ScreeningResult
from moderation.policy import ImagePolicy, ModerationPolicy

logger = logging.getLogger(__name__)

WITHHELD_MODES = ("blur", "placeholder")
WITHHELD_LABEL = "Withheld pending review"
PLACEHOLDER_COLOUR = (64, 64, 72)


class NudityScreener:
    """Flags an image when NudeNet detects a configured class at or above the threshold."""

    def __init__(self, policy: ImagePolicy) -> None:
        self.classes = frozenset(policy.classes)
        self.threshold = policy.threshold
        self._lock = threading.Lock()
        self._detector: Any = None

    @classmethod
    def from_settings(cls, settings: ModerationSettings) -> NudityScreener:
        return cls(ModerationPolicy.load(settings.policy_file or None).image)

    def load(self) -> None:
        """Create the onnxruntime session now (otherwise on the first image); idempotent."""
        self._get_detector()

    def __call__(self, image: Image.Image) -> ScreeningResult:
        detections = self.detect(image)
        hits = [d for d in detections if d["class"] in self.classes and d["score"] >= self.threshold]
        if not hits:
            return ScreeningResult(flagged=False)
        reasons = tuple(f"{d['class']} ({d['score']:.2f})" for d in sorted(hits, key=lambda d: -d["score"]))
        return ScreeningResult(flagged=True, reasons=reasons)

    def detect(self, image: Image.Image) -> list[dict[str, Any]]:
        """All NudeNet detections: [{"class": ..., "score": ..., "box": [x, y, w, h]}, ...]."""
        # NudeNet converts arrays from RGBA to BGR and back to RGB itself; give it RGBA.
        pixels = np.asarray(image.convert("RGBA"))
        return list(self._get_detector().detect(pixels))

    def _get_detector(self) -> Any:
        if self._detector is None:
            with self._lock:
                if self._detector is None:
                    from nudenet import NudeDetector

                    logger.info("loading NudeNet image screening model")
                    self._detector = NudeDetector()
        return self._detector


def withheld_version(image: Image.Image, mode: str = "blur") -> Image.Image:
    """What users see instead of a flagged image: heavily blurred, or a plain placeholder, same size, labelled.

    The blur is strong enough that nothing can be made out (radius ~1/12 of the longer side, after
    pixelation), and the result carries a visible "withheld" label.
    """
    if mode not in WITHHELD_MODES:
        raise ValueError(f"withheld image mode must be one of {', '.join(WITHHELD_MODES)}, got {mode!r}")
    rgb = image.convert("RGB")
    if mode == "placeholder":
        covered = Image.new("RGB", rgb.size, PLACEHOLDER_COLOUR)
    else:
        covered = _obscure(rgb)
    _label(covered, WITHHELD_LABEL)
    return covered


def _obscure(image: Image.Image) -> Image.Image:
    width, height = image.size
    cells = 12  # pixelate to a coarse grid first, so that no detail survives the blur
    small = image.resize((max(1, width * cells // max(width, height)), max(1, height * cells // max(width, height))),
                         Image.Resampling.BOX)
    coarse = small.resize((width, height), Image.Resampling.NEAREST)
    return coarse.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 12))


def _label(image: Image.Image, text: str) -> None:
    width, height = image.size
    font = ImageFont.load_default(size=max(12, min(width, height) // 20))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = (width - (right - left)) // 2, (height - (bottom - top)) // 2
    pad = max(4, (bottom - top) // 2)
    draw.rectangle((x - pad, y - pad, x + right - left + pad, y + bottom - top + pad), fill=(0, 0, 0))
    draw.text((x - left, y - top), text, fill=(255, 255, 255), font=font)
