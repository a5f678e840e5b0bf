"""Output image screening with the real NudeNet detector, and the withheld version users see instead.

No photograph ships with nudenet, so the flagged test image is composed here: a drawn torso with two exposed
breasts. The same drawing with the chest covered must pass, which shows the detector reacts to exposure, not
to skin tones or the figure's outline.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image, ImageDraw, ImageFilter

from config.settings import ModerationSettings
from engine.screening import ImageScreener, ScreeningResult
from moderation.images import NudityScreener, withheld_version
from moderation.policy import ImagePolicy
from tests.moderation_support import shared_policy

SKIN, DARKER_SKIN, NIPPLE, BACKDROP = (224, 172, 140), (209, 157, 125), (150, 80, 70), (90, 110, 140)


def drawn_figure(size: int, chest_covered: bool = False) -> Image.Image:
    """A crude nude torso (head, neck, trunk, two breasts with nipples), softly blurred like a painting."""
    image = Image.new("RGB", (size, size), BACKDROP)
    draw = ImageDraw.Draw(image)

    def box(*coords: float) -> list[float]:
        return [c * size / 1280 for c in coords]

    draw.ellipse(box(540, 80, 740, 320), fill=SKIN)
    draw.rectangle(box(600, 300, 680, 380), fill=SKIN)
    draw.polygon([tuple(box(x, y)) for x, y in ((380, 380), (900, 380), (820, 1000), (460, 1000))], fill=SKIN)
    for centre in (530, 750):
        draw.ellipse(box(centre - 110, 480, centre + 110, 700), fill=DARKER_SKIN)
        draw.ellipse(box(centre - 22, 600, centre + 22, 644), fill=NIPPLE)
    if chest_covered:
        draw.rectangle(box(400, 470, 880, 720), fill=(200, 30, 60))
    return image.filter(ImageFilter.GaussianBlur(6 * size / 1280))


def landscape(size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), (120, 170, 220))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, size * 5 // 8, size, size), fill=(60, 140, 60))
    draw.ellipse((size * 7 // 10, size // 12, size * 86 // 100, size * 23 // 100), fill=(250, 220, 90))
    return image


@pytest.fixture(scope="module")
def screener() -> NudityScreener:
    screener = NudityScreener(shared_policy().image)
    screener.load()
    return screener


def test_screener_implements_the_engine_hook(screener: NudityScreener) -> None:
    hook: ImageScreener = screener
    assert isinstance(hook(landscape(64)), ScreeningResult)


@pytest.mark.parametrize("size", [320, 1280])
def test_exposed_figure_is_flagged(screener: NudityScreener, size: int) -> None:
    result = screener(drawn_figure(size))
    assert result.flagged
    assert result.reasons and all(reason.startswith("FEMALE_BREAST_EXPOSED") for reason in result.reasons)


@pytest.mark.parametrize("image", [landscape(320), drawn_figure(320, chest_covered=True)], ids=["landscape", "covered"])
def test_clean_images_pass(screener: NudityScreener, image: Image.Image) -> None:
    assert screener(image) == ScreeningResult(flagged=False)


def test_classes_and_threshold_are_configurable() -> None:
    image = drawn_figure(320)
    assert not NudityScreener(ImagePolicy(classes=("MALE_GENITALIA_EXPOSED",), threshold=0.5))(image).flagged
    assert not NudityScreener(ImagePolicy(classes=("FEMALE_BREAST_EXPOSED",), threshold=0.99))(image).flagged
    assert NudityScreener.from_settings(ModerationSettings())(image).flagged


def test_screening_is_thread_safe(screener: NudityScreener) -> None:
    images = [drawn_figure(320), landscape(320)] * 4
    expected = [screener(image) for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(screener, images)) == expected


@pytest.mark.parametrize("mode", ["blur", "placeholder"])
def test_withheld_version_hides_the_image(screener: NudityScreener, mode: str) -> None:
    original = drawn_figure(320)
    shown = withheld_version(original, mode)
    assert shown.size == original.size and shown.mode == "RGB"
    assert not screener(shown).flagged
    # Outside the centred label no edge survives: the head's outline in the top quarter is gone.
    assert _sharpest_step(original.crop((0, 0, 320, 80))) > 15
    assert _sharpest_step(shown.crop((0, 0, 320, 80))) <= 3


def _sharpest_step(image: Image.Image) -> int:
    """The largest brightness change between horizontally neighbouring pixels."""
    grey = image.convert("L")
    width, height = grey.size
    pixels = grey.load()
    return max(abs(pixels[x + 1, y] - pixels[x, y]) for y in range(height) for x in range(width - 1))


def test_withheld_version_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError, match="blur, placeholder, got 'pixelate'"):
        withheld_version(landscape(32), "pixelate")
