"""Input images for image prompts (img2img): checked before any GPU time, stored as a clean PNG, read back safely.

    picture = check_input_image(data, limits, (width, height))   # InvalidImage with a clear reason, else RGB
    path = save_input_image(picture, folder)                      # <folder>/<random>.png, written atomically
    picture = open_input_image(path, (width, height))             # the worker's read, with the same checks

Blocking (decoding, file I/O): call these in an executor, never on the event loop. The checks, in the order
they run, each cheap before the next: the byte limit; the format by content (a JPEG, PNG or WebP signature, never
the file name); the pixel count from the header, before anything is decoded, so a decompression bomb or a PNG
declaring a huge size is refused without allocating it (Pillow's own MAX_IMAGE_PIXELS guard is far higher and only
warns below twice that, so its DecompressionBombError/Warning are caught as a second line); then the decode,
EXIF orientation applied, metadata dropped (a new RGB image carries none), cropped and resized to the job's size.
No torch: the chat side (bots/, the web playground) and the worker both use this module.
"""

from __future__ import annotations

import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from engine import messages
from engine.errors import InvalidRequest

FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}
"""What Pillow calls each format we take, and what users are told it is."""


class InvalidImage(InvalidRequest):
    """An input image that is refused: the message says why in words a user understands."""

    kind = "invalid_image"


@dataclass(frozen=True)
class InputImageLimits:
    max_bytes: int
    max_pixels: int


def sniff_format(data: bytes) -> str | None:
    """The format the content says it is (JPEG, PNG or WEBP), whatever the file is called; None otherwise."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_input_image(data: bytes, limits: InputImageLimits, size: tuple[int, int]) -> Image.Image:
    """The checked picture, cropped to `size`'s shape and resized to it, in RGB with no metadata."""
    if len(data) > limits.max_bytes:
        raise too_large(limits.max_bytes)
    expected = sniff_format(data)
    if expected is None:
        raise InvalidImage(messages.IMAGE_FORMAT)
    try:
        with Image.open(io.BytesIO(data), formats=[expected]) as image:
            _check_pixels(image, limits.max_pixels)
            if image.format == "JPEG":
                image.draft("RGB", size)  # decode at a reduced scale when that still covers `size`: less memory
            image.load()
            upright = ImageOps.exif_transpose(image)
            picture = upright.convert("RGB")
    except InvalidImage:
        raise  # ours, from the header check (a ValueError too: keep it from the clause below)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidImage(messages.IMAGE_TOO_MANY_PIXELS.format(limit=_megapixels(limits.max_pixels))) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise InvalidImage(messages.IMAGE_UNREADABLE.format(format=FORMATS[expected])) from None
    # ImageOps.fit crops the middle to the job's aspect, then resizes; a fresh RGB image keeps no EXIF, XMP, ICC.
    return ImageOps.fit(picture, size, Image.Resampling.LANCZOS)


def too_large(max_bytes: int) -> InvalidImage:
    """The refusal of a file over the byte limit (also for one refused before or while it downloads)."""
    return InvalidImage(messages.IMAGE_TOO_MANY_BYTES.format(limit=_megabytes(max_bytes)))


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    width, height = image.size  # from the header: nothing is decoded yet
    if width < 1 or height < 1 or width * height > max_pixels:
        raise InvalidImage(messages.IMAGE_TOO_MANY_PIXELS.format(limit=_megapixels(max_pixels)))


def save_input_image(picture: Image.Image, folder: Path) -> str:
    """Store a checked picture as PNG under a random name (atomically); its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{secrets.token_hex(16)}.png"
    partial = path.with_suffix(".partial")
    picture.save(partial, format="PNG")
    os.replace(partial, path)
    return str(path)


def open_input_image(path: str, size: tuple[int, int]) -> Image.Image:
    """The worker's read of a stored input image: the same checks again (the file crossed a shared folder), and
    fitted to `size`. Raises InvalidImage, or OSError if the file is gone."""
    data = Path(path).read_bytes()
    width, height = size
    return check_input_image(data, InputImageLimits(max_bytes=len(data), max_pixels=width * height), size)


def _megabytes(count: int) -> str:
    return f"{count / 1_000_000:g} MB"


def _megapixels(count: int) -> str:
    return f"{count / 1_000_000:.3g} megapixels"  # 4096² → "16.8 megapixels"
