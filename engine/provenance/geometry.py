"""Where the watermark's tiling went: its angle and period, read from the image's own periodic pattern.

The mark repeats every tile, so the whitened autocorrelation of a marked image peaks at the tiling's lattice
vectors: (P, 0) and (0, P) for a tile of P pixels, rotated by whatever angle the image was turned. The strongest
peak away from the origin gives the angle (modulo 90°: the lattice is square, and the detector tries the eight
rotations and mirrors of the folded tile anyway) and the period; the peaks at its multiples and at the
perpendicular vector refine both to a small fraction of a pixel. `to_tile_frame` then resamples the prefiltered
image so that the tiling is axis-aligned with the requested period, ready to be folded.

Only numpy, scipy and OpenCV: no torch here (`imagine verify` must stay light).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy import fft

JPEG_BLOCK = 16
BAND_CYCLES = 0.2
PEAKS_EXAMINED = 24
"""Local maxima of the autocorrelation examined as lattice vectors (their lattice score decides the order)."""
FLAT_SPREAD = 0.02
"""Prefiltered values varying less than this over 5×5 pixels: a flat area (a marked one never is)."""
EDGE_MARGIN = 20
"""Pixels dropped around flat areas: the step at their edge spreads over the prefilter's width (~11 px) plus
JPEG ringing."""
SAMPLE_STEP = 7
"""Every 7th lag is plenty to estimate the autocorrelation's noise level."""
_SQUARE_5 = np.ones((5, 5), np.uint8)
AXIS_CANDIDATES = 2
"""Straight tilings taken from the axes' profile besides the 2D lattice candidates."""
FUNDAMENTAL_SHARE = 0.3
"""A shorter vector replaces a tiling it divides when its lattice score is at least this share of that one's:
the tiling's own multiples can score higher than it (measured: 11.5 at 2P against 4.8 at P after a border)."""
"""JPEG's block grid (8 px luma blocks, 16 px chroma blocks at 4:2:0, read back into luma through RGB) puts lines
into the spectrum at multiples of 1/16 cycle per pixel, and a lattice of its own into the autocorrelation: those
lines are removed before looking."""


@dataclass(frozen=True)
class Lattice:
    angle: float
    """Radians, in [-π/4, π/4): how far the tiling is turned (counter-clockwise as seen on screen is negative)."""
    period: float
    """Tile side in pixels of the examined image."""
    strength: float
    """Height of the autocorrelation peak in units of its noise: the candidates are tried strongest first."""


def lattice_candidates(residual: np.ndarray, min_period: float, count: int = 3) -> list[Lattice]:
    """Up to `count` distinct tilings the prefiltered image may carry, strongest first, with half and twice the
    strongest one's period right after it (`_octaves`), then up to AXIS_CANDIDATES straight ones from the axes'
    profile."""
    if min(residual.shape) / 2 - 2 < min_period:
        return []  # too small to hold two tiles in any direction
    autocorrelation = _whitened_autocorrelation(residual * _away_from_flat(residual))
    height, width = autocorrelation.shape
    longest = min(height, width) / 2 - 2
    candidates: list[Lattice] = []
    peaks = _peaks(autocorrelation, min_period, longest, PEAKS_EXAMINED)
    scored = sorted(((_lattice_score(autocorrelation, dy, dx, longest), dy, dx) for dy, dx, _ in peaks), reverse=True)
    for strength, dy, dx in scored:
        vector = _refine(autocorrelation, dy, dx)
        lattice = _refine_with_harmonics(autocorrelation, vector, longest, strength)
        same = [i for i, earlier in enumerate(candidates) if _same_tiling(lattice, earlier)]
        if same:  # a point of a tiling already listed, or that tiling a point of this one: keep the shortest vector
            strongest = max(candidates[i].strength for i in same)
            # a true fundamental scores a fair share of its multiple (the ridges of straight edges do not)
            if lattice.period < min(candidates[i].period for i in same) and lattice.strength >= (
                FUNDAMENTAL_SHARE * strongest
            ):
                # one entry for the tiling: (2, 1) and (2, 0) steps of it were listed as two until now
                candidates[same[0]] = replace(lattice, strength=strongest)
                candidates = [earlier for i, earlier in enumerate(candidates) if i not in same[1:]]
            continue
        candidates.append(lattice)
    candidates = candidates[:count]
    if candidates:
        candidates[1:1] = _octaves(autocorrelation, candidates[0], min_period, longest)
    for lattice in _axis_candidates(autocorrelation, min_period, longest):
        if not any(
            _same_tiling(lattice, earlier) and abs(lattice.period - earlier.period) < 1.0 for earlier in candidates
        ):
            candidates.append(lattice)
    return candidates


def _octaves(autocorrelation: np.ndarray, lattice: Lattice, shortest: float, longest: float) -> list[Lattice]:
    """Half and twice the tiling's period, each refined on its own lattice points. On noise-like images the
    autocorrelation often peaks higher at twice the period than at the period itself, or the other way round
    (measured on the tiny model's images scaled to 40%: 204.8 px found for 102.4), and the fold decides. A
    scaled copy would carry the strongest vector's angle, which its harmonics can spoil: a spurious peak at
    half the period refines through the noise at its odd multiples (measured: 1.84° for a tiling turned 2.01°,
    after a 2° turn, a mirror and a 70% resize)."""
    vector = lattice.period * np.array([math.sin(lattice.angle), math.cos(lattice.angle)])  # (dy, dx)
    octaves = []
    for factor in (0.5, 2.0):
        if shortest <= factor * lattice.period <= longest:
            found = _refine(autocorrelation, *(factor * vector))
            octaves.append(_refine_with_harmonics(autocorrelation, found, longest, lattice.strength))
    return octaves


def _axis_candidates(autocorrelation: np.ndarray, shortest: float, longest: float) -> list[Lattice]:
    """Straight tilings from the sum of the two axes of the autocorrelation (as after a plain resize): adding
    the rows' and columns' evidence finds a small, noise-like image's period where no single 2D peak stands out
    (measured: the tiny model's images cropped 30% and scaled to 60%, 538 px, 3.5 tiles across)."""
    height, width = autocorrelation.shape
    cy, cx, reach = height // 2, width // 2, int(longest)
    profile = autocorrelation[cy, cx : cx + reach + 1] + autocorrelation[cy : cy + reach + 1, cx]
    lattices: list[Lattice] = []
    for lag in np.argsort(profile[int(math.ceil(shortest)) : reach])[::-1] + int(math.ceil(shortest)):
        if len(lattices) == AXIS_CANDIDATES:
            break
        if lag < 1 or any(abs(lag - lattice.period) <= 2 for lattice in lattices):
            continue  # the same peak again
        period = float(lag) + _vertex(profile[lag - 1 : lag + 2])
        lattices.append(Lattice(angle=0.0, period=period, strength=float(profile[lag]) / 2))
    return lattices


def to_tile_frame(residual: np.ndarray, lattice: Lattice, period: int) -> np.ndarray:
    """The image turned by -angle and scaled so that the tiling is axis-aligned with `period` pixels; the
    corners the turn brings in are zero (which the fold ignores)."""
    scale = period / lattice.period
    if scale < 0.75:  # shrink first with an area filter: a bilinear warp alone would alias the image's texture
        residual = cv2.resize(residual, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        scale = 1.0
    cos, sin = scale * math.cos(lattice.angle), scale * math.sin(lattice.angle)
    height, width = residual.shape
    # The lattice vector (cos θ, sin θ)·P must land on (period, 0): rows [[cos, sin], [-sin, cos]], scaled.
    matrix = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=np.float64)
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], dtype=np.float64)
    mapped = corners @ matrix.T
    low, high = mapped.min(axis=0), mapped.max(axis=0)
    matrix[:, 2] = -low
    size = (int(math.ceil(high[0] - low[0])), int(math.ceil(high[1] - low[1])))
    return cv2.warpAffine(
        residual, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
    )


def _away_from_flat(residual: np.ndarray) -> np.ndarray:
    """1 where the image has content, 0 on and near flat areas (the black corners a rotation brings in, a
    border): the step at their edge is a straight line, whose autocorrelation is a ridge of maxima exactly
    along the tiling's direction that can hide the tiling itself (measured on noise-like images turned 5°)."""
    spread = cv2.dilate(residual, _SQUARE_5) - cv2.erode(residual, _SQUARE_5)
    flat = (spread < FLAT_SPREAD).astype(np.uint8)
    if not flat.any():
        return np.ones_like(residual)
    # A box filter is a square dilation in O(1) per pixel, whatever the margin
    near = cv2.blur(flat.astype(np.float32), (2 * EDGE_MARGIN + 1,) * 2) > 1e-3
    return (~near).astype(np.float32)


def _whitened_autocorrelation(residual: np.ndarray) -> np.ndarray:
    """Autocorrelation of the image with its spectrum flattened (so lines, i.e. periodicities, stand out over
    the image's smooth spectrum) and JPEG's block-grid lines removed; centred (zero lag in the middle)."""
    power = np.abs(fft.rfft2(residual)) ** 2
    flattened = power / (cv2.blur(power, (9, 9)) + 1e-6 * float(power.mean()) + 1e-12)
    height, width = residual.shape
    for step in range(1, JPEG_BLOCK):
        _fill_line(flattened, round(step * height / JPEG_BLOCK))
        if step <= JPEG_BLOCK // 2:
            _fill_line(flattened.T, round(step * width / JPEG_BLOCK))
    flattened[0, 0] = 0.0  # the mean
    if BAND_CYCLES:
        fy = fft.fftfreq(height)[:, None]
        fx = fft.rfftfreq(width)[None, :]
        flattened *= np.exp(-(fy * fy + fx * fx) / (BAND_CYCLES * BAND_CYCLES))
    autocorrelation = fft.irfft2(flattened, s=residual.shape)
    return np.fft.fftshift(autocorrelation).astype(np.float32)


def _fill_line(spectrum: np.ndarray, row: int) -> None:
    """Overwrite rows row-1..row+1 with their neighbours a few rows out. Zeroing them instead would subtract a
    coherent pattern and put a comb of false peaks on the autocorrelation's axis."""
    if row - 4 < 0 or row + 5 > spectrum.shape[0]:
        return
    spectrum[row - 1 : row + 2] = 0.5 * (spectrum[row - 4 : row - 1] + spectrum[row + 2 : row + 5])


def _peaks(autocorrelation: np.ndarray, shortest: float, longest: float, count: int) -> list[tuple[int, int, float]]:
    """The strongest local maxima (lag dy, lag dx, score) in the half plane of lags between shortest and longest
    (the autocorrelation is symmetric, so the other half says nothing new)."""
    height, width = autocorrelation.shape
    cy, cx, reach = height // 2, width // 2, int(longest)
    window = autocorrelation[cy - reach : cy + reach + 1, cx : cx + reach + 1]  # a view: dx >= 0, |dy| <= reach
    dy, dx = np.ogrid[-reach : reach + 1, 0 : reach + 1]
    radius_squared = dy * dy + dx * dx
    allowed = (radius_squared >= shortest * shortest) & (radius_squared <= longest * longest) & ((dx > 0) | (dy > 0))
    sample = window[allowed][::SAMPLE_STEP]
    # In units of its noise, in place: the lattice scores read the same array.
    autocorrelation -= float(np.median(sample))
    autocorrelation /= float(np.std(sample)) + 1e-12
    local_max = window >= cv2.dilate(window, _SQUARE_5)
    rows, cols = np.nonzero(allowed & local_max)
    values = window[rows, cols]
    order = np.argsort(values)[::-1][:count]
    return [(int(rows[i]) - reach, int(cols[i]), float(values[i])) for i in order]


def _lattice_score(autocorrelation: np.ndarray, dy: int, dx: int, longest: float) -> float:
    """How much the autocorrelation looks like a square lattice with the vector (dy, dx): the weakest of the
    peaks at the vector, at its perpendicular and at both diagonals (those within reach). A straight edge in the
    image (a border, the corners a rotation brings in) makes a ridge of maxima along one line; only a tiling
    also peaks off that line."""
    height, width = autocorrelation.shape
    cy, cx = height // 2, width // 2
    values = []
    for my, mx in ((dy, dx), (dx, -dy), (dy + dx, dx - dy), (dy - dx, dx + dy)):
        row, col = cy + my, cx + mx
        if math.hypot(my, mx) > longest + 2 or not (1 <= row < height - 1 and 1 <= col < width - 1):
            continue
        values.append(float(autocorrelation[row - 1 : row + 2, col - 1 : col + 2].max()))
    return min(values) if len(values) >= 2 else 0.0


def _refine(autocorrelation: np.ndarray, dy: float, dx: float, reach: int = 2) -> np.ndarray:
    """Sub-pixel position of the peak nearest (dy, dx): the largest value within `reach`, then a parabola
    through it and its neighbours on each axis."""
    height, width = autocorrelation.shape
    cy, cx = height // 2, width // 2
    row, col = int(round(dy)) + cy, int(round(dx)) + cx
    top, left = max(row - reach, 1), max(col - reach, 1)
    window = autocorrelation[top : min(row + reach + 1, height - 1), left : min(col + reach + 1, width - 1)]
    if window.size == 0:
        return np.array([dy, dx], dtype=np.float64)
    r, c = np.unravel_index(int(np.argmax(window)), window.shape)
    row, col = top + int(r), left + int(c)
    return np.array(
        [
            row - cy + _vertex(autocorrelation[row - 1 : row + 2, col]),
            col - cx + _vertex(autocorrelation[row, col - 1 : col + 2]),
        ]
    )


def _vertex(three: np.ndarray) -> float:
    left, centre, right = (float(v) for v in three)
    curvature = left - 2 * centre + right
    return max(-0.5, min(0.5, 0.5 * (left - right) / curvature)) if curvature < 0 else 0.0


def _refine_with_harmonics(autocorrelation: np.ndarray, vector: np.ndarray, longest: float, strength: float) -> Lattice:
    """Least-squares lattice vector from every lattice point within reach: k·v and k·v⊥ for k = 1, 2, ...
    A point at twice the distance pins the angle twice as well."""
    perpendicular = np.array([vector[1], -vector[0]])  # (dy, dx) turned by 90°
    estimates, weights = [vector], [1.0]
    for base in (vector, perpendicular):
        for k in range(1, 8):
            predicted = k * base
            if np.hypot(*predicted) > longest:
                break
            if k == 1 and base is vector:
                continue
            found = _refine(autocorrelation, *predicted)
            per_step = found / k
            if base is perpendicular:
                per_step = np.array([-per_step[1], per_step[0]])  # back into the first vector's direction
            estimates.append(per_step)
            weights.append(float(k))
    combined = np.average(np.array(estimates), axis=0, weights=np.array(weights))
    angle = math.atan2(combined[0], combined[1])
    angle = (angle + math.pi / 4) % (math.pi / 2) - math.pi / 4  # the square lattice repeats every 90°
    return Lattice(angle=angle, period=float(np.hypot(*combined)), strength=strength)


def _same_tiling(one: Lattice, other: Lattice) -> bool:
    """Two tilings that are the same seen twice: the longer vector is a point a·v + b·v⊥ of the shorter one's
    square lattice: a whole multiple (b = 0), a diagonal (a = b) or any other, such as (2, 1). That one has no
    diagonals within reach when it is long, so its lattice score rests on fewer peaks and can beat the tiling's
    own vector (measured: 4.0 at 400 px, 28.5°, against 3.2 at 179 px, 2.0°, the tiny model's image after a 2°
    turn, a mirror and a 70% resize). Tolerance: 1° of turn, and 0.03 short vectors of length (0.03 diagonals
    for a diagonal)."""
    short, long = sorted((one, other), key=lambda lattice: lattice.period)
    turn = (long.angle - short.angle + math.pi / 4) % (math.pi / 2) - math.pi / 4
    ratio = long.period / short.period
    point = complex(round(ratio * math.cos(turn)), round(ratio * math.sin(turn)))
    if point == 0:
        return False
    unit = math.sqrt(2) if abs(point.real) == abs(point.imag) else 1.0
    return abs(ratio - abs(point)) < 0.03 * unit and abs(turn - math.atan2(point.imag, point.real)) < math.radians(1.0)
