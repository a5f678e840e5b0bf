"""Output image screening (the engine's `ImageScreener` hook) and the withheld version users see instead.

    screener = NudityScreener.from_settings(settings.moderation)   # classes/threshold from the policy file
    result = screener(image)            # ScreeningResult(flagged, reasons); blocking, thread-safe
    shown = withheld_version(image, settings.moderation.withheld_image)   # "blur" | "placeholder"

The detector is NudeNet's 320n model, bundled in the `nudenet` wheel and run on onnxruntime (one intra-op
thread, no spinning), offline. It is loaded on first use (under a lock); onnxruntime sessions may be run from
several threads at once, which is how the engine's post-processing pool calls it.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from pathlib import Path
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
        """All NudeNet detections: [{"class": ..., "score": ..., "box": [x, y, w, h]}, ...] (boxes in `image`'s
        pixels)."""
        detector = self._get_detector()
        # The model sees MODEL_SIDE² anyway: shrinking first (with antialiasing) saves converting and padding
        # the full-size image. NudeNet converts arrays from RGBA to BGR and back to RGB itself; give it RGBA.
        scale = min(1.0, detector.input_width / max(image.size))
        small = (
            image
            if scale == 1.0
            else image.resize(
                (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
            )
        )
        detections = detector.detect(np.asarray(small.convert("RGBA")))
        for detection in detections:
            detection["box"] = [round(value / scale) for value in detection["box"]]
        return list(detections)

    def _get_detector(self) -> Any:
        if self._detector is None:
            with self._lock:
                if self._detector is None:
                    self._detector = _load_detector()
        return self._detector


def _load_detector() -> Any:
    """NudeNet's detector with a session that is a good neighbour: one intra-op thread that sleeps instead of
    spinning. Parallelism comes from the engine's post-processing pool; on a busy CPU, onnxruntime's default
    (a spinning thread per core) measured 2-3× slower per image here."""
    import nudenet
    import onnxruntime
    from nudenet import NudeDetector

    logger.info("loading NudeNet image screening model")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    model = Path(nudenet.__file__).with_name("320n.onnx")
    detector = NudeDetector(model_path=str(model))
    # nudenet 3.4.2 (pinned) builds its session without options; `detect` only uses this attribute.
    detector.onnx_session = onnxruntime.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return detector


def withheld_version(image: Image.Image, mode: str = "blur") -> Image.Image:
    """What users see instead of a flagged image: heavily blurred, or a plain placeholder, same size, labelled.

    The blur is strong enough that nothing can be made out (a blur of ~1/12 of the longer side, done on a
    thumbnail), and the result carries a visible "withheld" label.
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
    """Average down to a 48-pixel thumbnail, blur that, and scale it back up: only broad colour fields remain
    (and it costs a few milliseconds, where a full-size blur of that strength costs hundreds)."""
    width, height = image.size
    side = 48
    small = image.resize(
        (max(1, width * side // max(width, height)), max(1, height * side // max(width, height))), Image.Resampling.BOX
    )
    return small.filter(ImageFilter.GaussianBlur(radius=side / 12)).resize((width, height), Image.Resampling.BICUBIC)


def _label(image: Image.Image, text: str) -> None:
    width, height = image.size
    font = ImageFont.load_default(size=max(12, min(width, height) // 20))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = (width - (right - left)) // 2, (height - (bottom - top)) // 2
    pad = max(4, (bottom - top) // 2)
    draw.rectangle((x - pad, y - pad, x + right - left + pad, y + bottom - top + pad), fill=(0, 0, 0))
    draw.text((x - left, y - top), text, fill=(255, 255, 255), font=font)


def output_screening(config: ModerationSettings) -> dict[str, Any]:
    """A job queue's or worker's output screening (`screener`, `withhold` keyword arguments), as
    `moderation.image_screening` asks: nothing when it is off."""
    if not config.image_screening:
        return {}
    return {
        "screener": NudityScreener.from_settings(config),
        "withhold": partial(withheld_version, mode=config.withheld_image),
    }
