"""The watermark's geometry search: which lattice vectors are one tiling, and the sizes the fold works at."""

from __future__ import annotations

import math

import numpy as np

from engine.provenance import geometry, watermark
from engine.provenance.geometry import Lattice


def _lattice(degrees: float, period: float) -> Lattice:
    angle = (math.radians(degrees) + math.pi / 4) % (math.pi / 2) - math.pi / 4  # as `geometry` reports it
    return Lattice(angle=angle, period=period, strength=1.0)


def test_every_point_of_a_tiling_is_that_tiling() -> None:
    tiling = _lattice(2.0, 179.1)
    # multiples, diagonals and the (2, 1) steps that outscored the tiling itself after turn + mirror + 70% resize
    for a, b in ((1, 0), (0, 1), (2, 0), (1, 1), (2, 2), (2, 1), (1, 2), (2, -1), (3, 1)):
        point = _lattice(2.0 + math.degrees(math.atan2(b, a)), 179.1 * math.hypot(a, b))
        assert geometry._same_tiling(tiling, point), (a, b)
        assert geometry._same_tiling(point, tiling), (a, b)


def test_other_tilings_are_not_the_same() -> None:
    tiling = _lattice(2.0, 179.1)
    assert not geometry._same_tiling(tiling, _lattice(2.0, 179.1 * 1.5))
    assert not geometry._same_tiling(tiling, _lattice(12.0, 250.0))
    assert not geometry._same_tiling(tiling, _lattice(2.0 + 26.57 + 3.0, 179.1 * math.sqrt(5)))  # 3° off (2, 1)
    assert not geometry._same_tiling(tiling, _lattice(2.0, 179.1 * 2.1))


def _largest_prime_factor(n: int) -> int:
    factor, largest = 2, 1
    while n > 1:
        while n % factor == 0:
            n, largest = n // factor, factor
        factor += 1
    return largest


def test_the_fold_works_at_fast_fft_sizes_near_the_period() -> None:
    assert watermark._fold_size(256.0) == 256
    assert watermark._fold_size(128.0) == 128
    for period in np.arange(watermark.MIN_PERIOD, 1400.0, 0.7):
        size = watermark._fold_size(float(period))
        assert abs(size / period - 1) <= 0.04, period
        assert _largest_prime_factor(size) <= 11, (period, size)
