"""The visible label: small (≤ 2% of the image), in a corner, legible on light and dark images, configurable."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.provenance.label import MAX_AREA_FRACTION, add_label, label_box

TEXT = "Imagined with AI"


def changed_box(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int] | None:
    difference = np.abs(np.asarray(after, dtype=np.int16) - np.asarray(before, dtype=np.int16)).max(axis=2)
    rows, cols = np.nonzero(difference)
    if len(rows) == 0:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


@pytest.mark.parametrize("size", [(1280, 1280), (1728, 960), (768, 1344), (640, 640), (320, 320)])
def test_label_covers_at_most_two_percent_in_the_bottom_right_corner(size: tuple[int, int]) -> None:
    plain = Image.new("RGB", size, (128, 128, 128))
    box = changed_box(plain, add_label(plain, TEXT))
    assert box is not None
    left, top, right, bottom = box
    assert (right - left) * (bottom - top) <= MAX_AREA_FRACTION * size[0] * size[1]
    assert left > size[0] / 2 and top > size[1] / 2  # bottom-right quadrant
    planned = label_box(TEXT, *size)
    assert planned is not None
    assert planned[0] <= left and planned[1] <= top and right <= planned[2] and bottom <= planned[3]


def _area(box: tuple[int, int, int, int] | None) -> int:
    assert box is not None
    return (box[2] - box[0]) * (box[3] - box[1])


def test_label_scales_with_the_image() -> None:
    small, large = label_box(TEXT, 640, 640), label_box(TEXT, 1280, 1280)
    assert small is not None and large is not None
    assert 1.6 < (large[2] - large[0]) / (small[2] - small[0]) < 2.4


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 0), (240, 220, 40), (20, 30, 90)])
def test_label_is_legible_on_light_and_dark_images(background: tuple[int, int, int]) -> None:
    plain = Image.new("RGB", (1280, 1280), background)
    labelled = add_label(plain, TEXT)
    box = label_box(TEXT, 1280, 1280)
    assert box is not None
    luma = np.asarray(labelled.convert("L").crop(box), dtype=np.int16)
    text, backdrop = np.percentile(luma, 99), np.percentile(luma, 30)
    assert text - backdrop >= 80, f"text {text} vs backdrop {backdrop}"
    assert text >= 200  # the letters themselves are near white


def test_label_is_semi_transparent() -> None:
    """The pill darkens what is under it rather than hiding it: a pattern beneath still shows through."""
    stripes = np.zeros((640, 640, 3), dtype=np.uint8)
    stripes[:, ::2] = 255
    plain = Image.fromarray(stripes)
    box = label_box(TEXT, 640, 640)
    assert box is not None
    corner = np.asarray(add_label(plain, TEXT).convert("L").crop(box), dtype=np.int16)
    assert np.abs(np.diff(corner[2, :], axis=0)).max() > 60  # the stripes still alternate in the pill's edge row


def test_text_is_configurable_and_empty_text_means_no_label() -> None:
    plain = Image.new("RGB", (640, 640), (50, 90, 60))
    assert changed_box(plain, add_label(plain, "")) is None
    assert changed_box(plain, add_label(plain, "   ")) is None
    longer = changed_box(plain, add_label(plain, "Made with an AI image generator"))
    shorter = changed_box(plain, add_label(plain, "AI"))
    assert longer is not None and shorter is not None
    assert _area(longer) > _area(shorter)


def test_very_long_text_shrinks_to_stay_within_two_percent() -> None:
    plain = Image.new("RGB", (1280, 1280), (50, 90, 60))
    box = changed_box(plain, add_label(plain, "Imagined with AI " * 6))
    assert box is not None
    assert _area(box) <= MAX_AREA_FRACTION * 1280 * 1280


def test_image_too_small_for_a_legible_label_is_left_alone() -> None:
    plain = Image.new("RGB", (96, 96), (50, 90, 60))
    assert label_box(TEXT, 96, 96) is None
    assert changed_box(plain, add_label(plain, TEXT)) is None
