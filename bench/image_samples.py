"""Synthetic natural-looking images, and the ways images get re-shared, for the provenance tests and benchmark.

Kinds: `gradient` (smooth, almost no texture: the hardest case for hiding a mark), `texture` (multi-scale
noise like foliage or clouds), `photo` (smooth shapes with soft edges, a gradient sky and sensor noise) and
`noise` (dense colour noise like the tiny offline model's output). Every image is a pure function of its seed.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("gradient", "texture", "photo", "noise")


def sample_image(kind: str, seed: int, width: int = 1280, height: int = 1280) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = _MAKERS[kind](rng, height, width)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * x + np.sin(angle) * y
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return start + (end - start) * ramp[..., None]


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    coarse = rng.normal(size=(max(2, height // cell), max(2, width // cell))).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((width, height), Image.Resampling.BICUBIC))


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    field = sum(_smooth_noise(rng, height, width, cell) * cell**0.5 for cell in (4, 16, 64, 256))
    field = (field - field.mean()) / (field.std() + 1e-6)
    return rng.uniform(60, 200, 3) + field[..., None] * rng.uniform(20, 50, 3)


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    image = Image.fromarray(np.clip(_gradient(rng, height, width), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 25))):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        rx = int(rng.integers(width // 40 + 1, width // 4 + 2))
        ry = int(rng.integers(height // 40 + 1, height // 4 + 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3)))
    pixels = np.asarray(image).astype(np.float32)
    return pixels + rng.normal(0, rng.uniform(1, 6), (height, width, 1))


def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    pixels = rng.normal(128, rng.uniform(30, 70), (height, width, 3))
    blur = rng.uniform(0.0, 1.5)
    if blur > 0.3:
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur))
        pixels = np.asarray(image)
    return pixels


_MAKERS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "gradient": _gradient, "texture": _texture, "photo": _photo, "noise": _noise,
}


# The ways an image gets re-shared: re-compressed, resized, cropped.

def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def resize(image: Image.Image, factor: float) -> Image.Image:
    size = (round(image.width * factor), round(image.height * factor))
    return image.resize(size, Image.Resampling.LANCZOS)


def crop(image: Image.Image, side: str, fraction: float = 0.1) -> Image.Image:
    """Cut `fraction` of the image off one side: left, right, top or bottom."""
    dx, dy = round(image.width * fraction), round(image.height * fraction)
    boxes = {"left": (dx, 0, image.width, image.height), "right": (0, 0, image.width - dx, image.height),
             "top": (0, dy, image.width, image.height), "bottom": (0, 0, image.width, image.height - dy)}
    return image.crop(boxes[side])


SIDES = ("left", "right", "top", "bottom")

ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg60": lambda image: jpeg(image, 60),
    "resize50": lambda image: resize(image, 0.5),
    "resize50_and_back": lambda image: resize(resize(image, 0.5), 2.0),
    **{f"crop10_{side}": (lambda image, side=side: crop(image, side)) for side in SIDES},
    **{f"all_three_{side}": (lambda image, side=side: jpeg(resize(crop(image, side), 0.5), 60)) for side in SIDES},
}
"""Each attack applied to a delivered JPEG. `all_three_*`: a 10% crop, then a 50% resize, then JPEG 60."""
