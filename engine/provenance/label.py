"""The visible label: a small, semi-transparent "Imagined with AI" tag in the bottom-right corner.

White text on a translucent dark pill reads on light and dark images alike. The font (Pillow's built-in
scalable font, no download) grows with the image, and the tag never covers more than MAX_AREA_FRACTION of it:
on an image too small for a legible tag, the tag is left out (and logged).
"""

from __future__ import annotations

import logging
import math

from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

MAX_AREA_FRACTION = 0.02
FONT_FRACTION = 0.02
"""Font size as a fraction of the image's shorter side: 25 px on 1280×1280."""
MIN_FONT_PX = 9
PILL_RGBA = (0, 0, 0, 128)
TEXT_RGBA = (255, 255, 255, 215)


def add_label(image: Image.Image, text: str) -> Image.Image:
    """A copy of `image` (RGB) with the label in its bottom-right corner; unchanged if `text` is empty."""
    image = image.convert("RGB")
    text = " ".join(text.split())
    if not text:
        return image
    layout = _fit(text, image.width, image.height)
    if layout is None:
        logger.debug("label %r left out: a %dx%d image has no room for it", text, image.width, image.height)
        return image
    font, box = layout
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    left, top, right, bottom = box
    draw.rounded_rectangle((left, top, right - 1, bottom - 1), radius=(bottom - top) // 2, fill=PILL_RGBA)
    draw.text(((left + right) / 2, (top + bottom) / 2), text, font=font, fill=TEXT_RGBA, anchor="mm")
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def label_box(text: str, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Where the label goes on a width×height image (left, top, right, bottom; right and bottom exclusive, as in
    `Image.crop`), or None if it does not fit."""
    layout = _fit(" ".join(text.split()), width, height)
    return layout[1] if layout else None


def _fit(text: str, width: int, height: int) -> tuple[ImageFont.FreeTypeFont, tuple[int, int, int, int]] | None:
    size = max(MIN_FONT_PX, round(min(width, height) * FONT_FRACTION))
    while size >= MIN_FONT_PX:
        font = ImageFont.load_default(size=size)
        assert isinstance(font, ImageFont.FreeTypeFont)  # a size is given: Pillow's bundled scalable font
        box = _pill(font, text, width, height)
        box_width, box_height = box[2] - box[0], box[3] - box[1]
        if box[0] >= 0 and box[1] >= 0 and box_width * box_height <= MAX_AREA_FRACTION * width * height:
            return font, box
        shrink = math.sqrt(MAX_AREA_FRACTION * width * height / max(box_width * box_height, 1))
        size = min(size - 1, math.floor(size * shrink))
    return None


def _pill(font: ImageFont.FreeTypeFont, text: str, width: int, height: int) -> tuple[int, int, int, int]:
    """The pill around the text, padded by half the font size and inset from the corner by the same."""
    left, top, right, bottom = (round(edge) for edge in font.getbbox(text, anchor="mm"))  # whole pixels already
    pad = max(2, round(font.size * 0.5))
    pill_width, pill_height = (right - left) + 2 * pad, (bottom - top) + pad
    margin = pad
    return (width - margin - pill_width, height - margin - pill_height, width - margin, height - margin)
