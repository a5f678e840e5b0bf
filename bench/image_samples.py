"""Synthetic natural-looking images, and the ways images get re-shared, for the provenance tests and benchmark.

Kinds: `gradient` (smooth, almost no texture: the hardest case for hiding a mark), `texture` (multi-scale
noise like foliage or clouds), `photo` (smooth shapes with soft edges, a gradient sky and sensor noise) and
`noise` (dense colour noise like the tiny offline model's output). Every image is a pure function of its seed.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

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
    "gradient": _gradient,
    "texture": _texture,
    "photo": _photo,
    "noise": _noise,
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
    boxes = {
        "left": (dx, 0, image.width, image.height),
        "right": (0, 0, image.width - dx, image.height),
        "top": (0, dy, image.width, image.height),
        "bottom": (0, 0, image.width, image.height - dy),
    }
    return image.crop(boxes[side])


def crop_sides(image: Image.Image, fraction: float) -> Image.Image:
    """Keep the centre: `fraction` of the width and height cut off, half on each side (a 30% crop keeps 70%)."""
    dx, dy = round(image.width * fraction / 2), round(image.height * fraction / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def rotate(image: Image.Image, degrees: float, expand: bool = False) -> Image.Image:
    """Counter-clockwise, bicubic, black where the rotated picture leaves the frame (as image editors do)."""
    return image.rotate(degrees, Image.Resampling.BICUBIC, expand=expand, fillcolor=(0, 0, 0))


def flip(image: Image.Image, axis: str) -> Image.Image:
    mirror = Image.Transpose.FLIP_LEFT_RIGHT if axis == "horizontal" else Image.Transpose.FLIP_TOP_BOTTOM
    return image.transpose(mirror)


def border(image: Image.Image, width: int, colour: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    framed = Image.new("RGB", (image.width + 2 * width, image.height + 2 * width), colour)
    framed.paste(image.convert("RGB"), (width, width))
    return framed


def screenshot(image: Image.Image) -> Image.Image:
    """What a screenshot of a chat client looks like: shown at 75%, a frame of UI around it, saved as JPEG 75."""
    return jpeg(border(resize(image, 0.75), 24, (54, 57, 63)), 75)


def gaussian_noise(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    noisy = pixels + np.random.default_rng(seed).normal(0, sigma, pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def gamma(image: Image.Image, value: float) -> Image.Image:
    table = [round(255 * (i / 255) ** value) for i in range(256)]
    return image.convert("RGB").point(table * 3)


def webp(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="WEBP", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def social(image: Image.Image) -> Image.Image:
    """A social network's upload path: longest side to 1080 px, JPEG 70."""
    return jpeg(resize(image, 1080 / max(image.size)), 70)


SIDES = ("left", "right", "top", "bottom")

ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg60": lambda image: jpeg(image, 60),
    "resize50": lambda image: resize(image, 0.5),
    "resize50_and_back": lambda image: resize(resize(image, 0.5), 2.0),
    **{f"crop10_{side}": (lambda image, side=side: crop(image, side)) for side in SIDES},
    **{f"all_three_{side}": (lambda image, side=side: jpeg(resize(crop(image, side), 0.5), 60)) for side in SIDES},
}
"""Each attack applied to a delivered JPEG. `all_three_*`: a 10% crop, then a 50% resize, then JPEG 60."""

GEOMETRY_ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    **{f"rotate{angle:+g}": (lambda image, angle=angle: rotate(image, angle)) for angle in (-5, -2, 1, 2, 5)},
    **{f"rotate{angle:+g}_expand": (lambda image, angle=angle: rotate(image, angle, expand=True)) for angle in (-5, 3)},
    "rotate3_jpeg75": lambda image: jpeg(rotate(image, 3), 75),
    "flip_horizontal": lambda image: flip(image, "horizontal"),
    "flip_vertical": lambda image: flip(image, "vertical"),
    "flip_horizontal_jpeg70": lambda image: jpeg(flip(image, "horizontal"), 70),
    **{
        f"scale{round(100 * f)}_jpeg{q}": (lambda image, f=f, q=q: jpeg(resize(image, f), q))
        for f, q in ((0.4, 80), (0.4, 60), (0.6, 70), (0.75, 60), (0.9, 80), (1.3, 70), (1.5, 60), (2.0, 80))
    },
    "crop30": lambda image: crop_sides(image, 0.3),
    "crop30_scale60_jpeg70": lambda image: jpeg(resize(crop_sides(image, 0.3), 0.6), 70),
    "border_scale80_jpeg70": lambda image: jpeg(border(resize(image, 0.8), 40), 70),
    "screenshot": screenshot,
    "rotate2_flip_scale70_jpeg75": lambda image: jpeg(resize(flip(rotate(image, 2), "horizontal"), 0.7), 75),
}
"""Rotations (counter-clockwise degrees; `_expand` grows the canvas), mirrors, scales combined with JPEG, crops
that keep the centre, borders and a screenshot-like path."""

PROCESSING_ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "blur1": lambda image: image.filter(ImageFilter.GaussianBlur(1.0)),
    "noise5": lambda image: gaussian_noise(image, 5.0),
    "colour": lambda image: ImageEnhance.Contrast(ImageEnhance.Color(image).enhance(1.4)).enhance(1.2),
    "gamma0.7": lambda image: gamma(image, 0.7),
    "webp75": lambda image: webp(image, 75),
    "social": social,
}
"""Edits that change pixel values but not geometry."""
