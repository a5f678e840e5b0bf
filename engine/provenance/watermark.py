"""The invisible watermark: a 48-bit payload in a tiled, texture-masked luma pattern that survives JPEG, resizing,
cropping, rotation and mirroring.

Embedding. The pattern lives in luma only (4:2:0 JPEG subsampling wipes chroma). One 256×256 tile holds 32×32
chips of 8×8 px, each a smooth bump times ±1: coarse enough to survive JPEG quality 60 after a 50% resize. A
fixed quarter of the chips are pilots (a known sync sequence); the others carry the payload, CRC-framed and
convolutionally coded (`coding`), each code symbol spread over about three chips with pseudo-random signs. The
tile repeats over the whole image, so a crop only shifts the grid. The amplitude follows local texture
(stronger where the eye does not see it) and is normalised to a fixed PSNR.

Detection. High-pass and normalise the luma so that image content does not dominate, cut it into tiles of the
watermark's period and add them up ("fold"): the pattern adds coherently, the image does not. The fold is
whitened by the tiles' own power spectrum, the grid offset is the peak of its FFT cross-correlation with the
pilots under each of the tile's eight symmetries (`ORIENTATIONS`: flips and quarter turns), and the chips are
then read, Viterbi-decoded and CRC-checked. A mark is reported only when the sync peak is far above chance AND
the CRC checks out. Geometries tried, cheapest first: the original tiling (256 px), half (a 50% resize), then
the tilings the image's autocorrelation shows (`geometry`: any angle, any scale from ~20% up), each resampled
to lie on the axes before folding.

Everything here is fixed forever for version 1 of the mark: changing a constant or the seed makes earlier images
unverifiable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image
from scipy import fft

from engine.provenance import coding, geometry

PAYLOAD_BYTES = 6
TILE = 256
CHIP = 8
GRID = TILE // CHIP
PILOT_CHIPS = GRID * GRID // 4
LAYOUT_SEED = 0x1A9E_0001
TARGET_PSNR_DB = 42.0
SYNC_THRESHOLD = 8.0
"""Pilot correlation peak, in units of its noise, needed to accept a mark (the CRC must check out too).
Unmarked images peak at about 5 (the largest of 8 orientations × 65,536 roughly Gaussian values, over up to 9
geometries, with a heavier tail: 6.7 the highest in 1,000 images); marked ones after the hardest required attacks
at 9.7 or more (the tiny model's noise-like images scaled to 40% and saved at JPEG 60), most at 14 or more."""
MAX_SIDE = 2048
"""Larger images are examined shrunk to this: our images are 1280² at most, so only an enlarged copy (or one
pasted into a bigger canvas) is larger, and the mark survives the shrink from anything up to 300% (measured:
detection unchanged; CPU time for a 200% copy 375 ms instead of 560, for 300% 464 instead of 1,533)."""
MIN_PERIOD = 48
"""The smallest period the detector looks for: marks shrunk below ~20% have lost their chips anyway."""
LATTICE_CANDIDATES = 3
"""Tilings read from the autocorrelation and tried when the untouched and half-size ones fail: the mark's own
is the strongest peak after every required attack; the next two guard against an image with a texture of its own."""
STRAIGHT_RADIANS = math.radians(0.1)
"""A tiling turned by less than this is folded as it is (the fold tolerates about 0.25°) instead of resampled."""

ORIENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "upright": lambda fold: fold,
    "mirrored left-right": np.fliplr,
    "mirrored top-bottom": np.flipud,
    "turned 180°": lambda fold: np.rot90(fold, 2),
    "turned 90° counter-clockwise": lambda fold: np.rot90(fold, -1),
    "turned 90° clockwise": lambda fold: np.rot90(fold, 1),
    "transposed": np.transpose,
    "anti-transposed": lambda fold: np.rot90(fold, 2).T,
}
"""The square tile's eight symmetries, keyed by what happened to the image: the fold is tried under each (a
mirrored image folds into a mirrored tile). Each costs two 256² FFTs, and the CRC keeps false hits out."""

_TARGET_RMS = 255.0 / 10 ** (TARGET_PSNR_DB / 20)
_SYMBOLS = coding.coded_length(PAYLOAD_BYTES)


def _layout() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which chips are pilots, which carry data, each chip's ±1 sign, and the code symbol each data chip carries."""
    rng = np.random.default_rng(LAYOUT_SEED)
    order = rng.permutation(GRID * GRID)
    pilots, data = order[:PILOT_CHIPS], order[PILOT_CHIPS:]
    # Balanced pilot signs: anything periodic at the chip size (JPEG's 8×8 blocks) then correlates to zero.
    signs = np.empty(GRID * GRID, dtype=np.float32)
    signs[pilots] = rng.permutation(np.repeat(np.array([-1.0, 1.0], dtype=np.float32), PILOT_CHIPS // 2))
    signs[data] = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), len(data))
    return pilots, data, signs, np.arange(len(data)) % _SYMBOLS


_PILOTS, _DATA, _SIGNS, _SYMBOL_OF_CHIP = _layout()
_BUMP_1D = np.sin(np.pi * (np.arange(CHIP) + 0.5) / CHIP).astype(np.float32)
_BUMP = np.outer(_BUMP_1D, _BUMP_1D)


def _chips_to_pixels(chips: np.ndarray) -> np.ndarray:
    return np.kron(chips.reshape(GRID, GRID), _BUMP).astype(np.float32)


def _pilot_spectra() -> dict[str, np.ndarray]:
    """The conjugate spectrum of the pilot tile as each orientation's inverse leaves it. Correlating a fold with
    these gives, for every orientation, the same set of values as turning the fold and correlating it with the
    upright pilots (only the peak's position differs), at one forward FFT for all eight."""
    chips = np.zeros(GRID * GRID, dtype=np.float32)
    chips[_PILOTS] = _SIGNS[_PILOTS]
    pilots = _chips_to_pixels(chips)
    return {name: np.conj(fft.rfft2(ORIENTATIONS[_INVERSE.get(name, name)](pilots))) for name in ORIENTATIONS}


_INVERSE = {
    "turned 90° counter-clockwise": "turned 90° clockwise",
    "turned 90° clockwise": "turned 90° counter-clockwise",
}
"""The other orientations undo themselves."""
_PILOT_SPECTRA = _pilot_spectra()
_PILOT_SPECTRUM = _PILOT_SPECTRA["upright"]
_FREQUENCY = np.hypot(fft.fftfreq(TILE)[:, None], fft.rfftfreq(TILE)[None, :])
_BAND = _FREQUENCY <= 0.25  # the chips' energy lies below this; above it is only image and JPEG noise


@dataclass(frozen=True)
class Detection:
    payload: bytes
    sync_score: float
    """Pilot correlation peak in units of its noise; SYNC_THRESHOLD is the bar."""
    period: float
    """Tile size found, in pixels of the examined image: 256 unscaled, 128 after a 50% resize."""
    rotation: float = 0.0
    """Degrees counter-clockwise the tiling was turned by (within ±45°; quarter turns are in `orientation`)."""
    orientation: str = "upright"
    """Which of `ORIENTATIONS` matched: "mirrored left-right" for a horizontally flipped image."""

    @property
    def watermark_id(self) -> str:
        return self.payload.hex()

    @property
    def transformation(self) -> str:
        """What the image went through since delivery, as far as the mark can tell: "as delivered", or e.g.
        "scaled to 75%, rotated 2.0° clockwise, mirrored left-right"."""
        parts = []
        if abs(self.period / TILE - 1) > 0.01:
            parts.append(f"scaled to {100 * self.period / TILE:.0f}%")
        if abs(self.rotation) >= 0.05:
            parts.append(f"rotated {abs(self.rotation):.1f}° {'counter-' if self.rotation > 0 else ''}clockwise")
        if self.orientation != "upright":
            parts.append(self.orientation)
        return ", ".join(parts) or "as delivered"


def tile_pattern(payload: bytes) -> np.ndarray:
    """One tile of the mark, unit RMS."""
    if len(payload) != PAYLOAD_BYTES:
        raise ValueError(f"watermark payload must be {PAYLOAD_BYTES} bytes, got {len(payload)}")
    chips = np.zeros(GRID * GRID, dtype=np.float32)
    chips[_PILOTS] = _SIGNS[_PILOTS]
    chips[_DATA] = _SIGNS[_DATA] * coding.encode(payload)[_SYMBOL_OF_CHIP]
    pixels = _chips_to_pixels(chips)
    return pixels / np.sqrt(np.mean(pixels**2))


def embed(image: Image.Image, payload: bytes) -> Image.Image:
    """The image with the mark added to its luma (the same offset on R, G and B leaves chroma unchanged)."""
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    pattern = np.tile(tile_pattern(payload), (-(-height // TILE), -(-width // TILE)))[:height, :width]
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    delta = _masking(luma) * pattern
    delta *= _TARGET_RMS / max(float(np.sqrt(np.mean(delta**2))), 1e-6)
    # rint(pixel + delta) == pixel + rint(delta) for integer pixels: round once, add with saturation
    offset = np.rint(delta).astype(np.int16)
    return Image.fromarray(cv2.add(rgb, cv2.merge([offset, offset, offset]), dtype=cv2.CV_8U), "RGB")


def _masking(luma: np.ndarray) -> np.ndarray:
    """Relative strength per pixel: local contrast (texture hides the mark), with a floor for flat areas and a
    cap so that a few busy regions do not take the whole budget. A smooth map, so mostly built at 1/4 size."""
    mean = cv2.blur(luma, (9, 9))
    variance = cv2.blur(luma * luma, (9, 9)) - mean * mean
    small_size = (max(1, luma.shape[1] // 4), max(1, luma.shape[0] // 4))
    small = cv2.resize(variance, small_size, interpolation=cv2.INTER_AREA)
    activity = cv2.blur(np.sqrt(np.maximum(small, 0.0)), (5, 5)) + 2.0
    activity = np.minimum(activity, 4.0 * float(np.median(activity)))
    return cv2.resize(activity, (luma.shape[1], luma.shape[0]), interpolation=cv2.INTER_LINEAR)


def detect(image: Image.Image) -> Detection | None:
    """The mark's payload if the image carries one, else None."""
    luma = _examined_luma(image)
    if min(luma.shape) < MIN_PERIOD:
        return None
    residual = _prefilter(luma)
    for hypothesis in _hypotheses(residual):
        sync_score, whitened, orientation = hypothesis.synchronise()
        if sync_score >= SYNC_THRESHOLD:
            payload = _read_payload(*_align(whitened, orientation))
            if payload is not None:
                return Detection(payload, sync_score, hypothesis.period, hypothesis.rotation, orientation)
    return None


def peak_sync_score(image: Image.Image) -> float:
    """The strongest pilot correlation over every geometry `detect` tries: how close an image comes to passing
    the sync test (for calibration and benchmarks)."""
    luma = _examined_luma(image)
    if min(luma.shape) < MIN_PERIOD:
        return 0.0
    residual = _prefilter(luma)
    return max(hypothesis.synchronise()[0] for hypothesis in _hypotheses(residual))


@dataclass(frozen=True)
class _Hypothesis:
    """One guess at the geometry: fold `residual` (already turned if the guess has an angle) at `period`."""

    residual: np.ndarray
    period: float
    rotation: float = 0.0
    fold_period: float | None = None
    """The period in `residual` itself, when it was resampled to put the tiling on the axes."""

    def synchronise(self) -> tuple[float, np.ndarray, str]:
        return _synchronise(self.residual, self.fold_period or self.period)


def _hypotheses(residual: np.ndarray) -> Iterator[_Hypothesis]:
    """Cheapest first: the untouched tiling (delivered, cropped, flipped), a 50% resize, then the tilings
    the image's autocorrelation shows (any angle and scale), computed only if the first two fail."""
    tried = [float(TILE), TILE / 2]
    for period in tried:
        yield _Hypothesis(residual, period)
    for lattice in geometry.lattice_candidates(residual, MIN_PERIOD, LATTICE_CANDIDATES):
        straight = abs(lattice.angle) < STRAIGHT_RADIANS
        if straight and any(abs(lattice.period - earlier) <= 0.003 * earlier for earlier in tried):
            continue
        if straight:
            tried.append(lattice.period)
            if lattice.period <= TILE:
                yield _Hypothesis(residual, lattice.period)
                continue
            # Longer than a tile: shrunk to TILE first, like a turned one. The fold keeps only a tile's worth of
            # frequencies anyway, and folding as it is cost up to 2.2x the image's pixels in padding (measured:
            # 26 ms for a spurious 632 px period of an unmarked 1280² image).
            lattice = replace(lattice, angle=0.0)
        # Turned at (nearly) its own scale: upsampling a small tiling to 256 px would cost up to 25x the
        # pixels (measured: 1 s for a spurious 50 px candidate); folding handles any whole period.
        frame_period = min(TILE, _fold_size(lattice.period))
        turned = geometry.to_tile_frame(residual, lattice, frame_period)
        # the lattice angle is measured with y pointing down: a counter-clockwise turn makes it negative
        rotation = 0.0 if straight else -math.degrees(lattice.angle)
        yield _Hypothesis(turned, lattice.period, rotation, float(frame_period))


def _examined_luma(image: Image.Image) -> np.ndarray:
    """Luma as float32; an image larger than MAX_SIDE (only an upscaled copy could carry a mark) is shrunk
    first, which keeps time and memory bounded for any upload."""
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
    return np.asarray(image.convert("L"), dtype=np.float32)


def _prefilter(luma: np.ndarray) -> np.ndarray:
    """Remove the image's smooth content and equalise its local contrast, so that the mark stands out and no
    single busy region dominates the fold. Box filters applied twice: nearly Gaussian, several times faster."""
    residual = luma - _smooth(luma, 11)
    local_rms = np.sqrt(np.maximum(_smooth(residual * residual, 21), 0.0)) + 1.0  # running sums can dip below 0
    return np.clip(residual / local_rms, -3.0, 3.0)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    return cv2.blur(cv2.blur(values, (width, width)), (width, width))


def _synchronise(residual: np.ndarray, period: float) -> tuple[float, np.ndarray, str]:
    """Fold the prefiltered image at `period`, whiten the fold, and find the orientation that best matches the
    pilots: (sync score, whitened fold at the tile size, orientation)."""
    whole = _fold_size(period)
    if whole != period:  # resample slightly so that the period is a whole number of pixels
        factor = whole / period
        residual = cv2.resize(residual, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    spectra = fft.rfft2(_tiles(residual, whole))
    noise = cv2.blur((np.abs(spectra) ** 2).mean(axis=0).astype(np.float32), (5, 5), borderType=cv2.BORDER_REFLECT)
    fold, noise = _to_tile_spectrum(spectra.sum(axis=0), whole), _to_tile_spectrum(noise, whole).real
    floor = 0.1 * float(np.median(noise[_BAND])) + 1e-12
    whitened = np.where(_BAND, fold / (noise + floor), 0)
    scores = {name: _peak_score(whitened * pilots)[0] for name, pilots in _PILOT_SPECTRA.items()}
    orientation = max(scores, key=scores.__getitem__)
    return scores[orientation], whitened, orientation


def _fold_size(period: float) -> int:
    """The whole number of pixels a tiling of `period` is resampled to before folding: the nearest size whose FFT
    is fast (no prime factor above 11). A prime size makes pocketfft fall back to a slow algorithm (measured on a
    1280² image: folding at 179 px 45 ms, at 180 px 14 ms), and the lattice periods of an unmarked image are
    anything; the resize (by 4% at most) is one the fold would do anyway to reach a whole number."""
    lower, upper = fft.prev_fast_len(math.floor(period)), fft.next_fast_len(math.ceil(period))
    return lower if period - lower <= upper - period else upper


def _align(whitened: np.ndarray, orientation: str) -> tuple[np.ndarray, tuple[int, int]]:
    """The fold turned into `orientation` (spatial, TILE×TILE) and its grid offset against the pilots."""
    oriented = ORIENTATIONS[orientation](fft.irfft2(whitened, s=(TILE, TILE)))
    return oriented, _peak_score(fft.rfft2(oriented) * _PILOT_SPECTRUM)[1]


def _peak_score(cross_spectrum: np.ndarray) -> tuple[float, tuple[int, int]]:
    """The cross-correlation's peak in units of its noise, and where it is."""
    correlation = fft.irfft2(cross_spectrum, s=(TILE, TILE))
    row, col = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    return float((correlation[row, col] - correlation.mean()) / (correlation.std() + 1e-12)), (int(row), int(col))


def _read_payload(fold: np.ndarray, offset: tuple[int, int]) -> bytes | None:
    """Correlate each chip of the aligned fold with its bump, gather chips into code symbols, decode."""
    aligned = np.roll(fold, (-offset[0], -offset[1]), axis=(0, 1))
    chips = np.einsum("iajb,ab->ij", aligned.reshape(GRID, CHIP, GRID, CHIP), _BUMP).ravel()
    soft = np.bincount(_SYMBOL_OF_CHIP, weights=chips[_DATA] * _SIGNS[_DATA], minlength=_SYMBOLS)
    return coding.decode(soft, PAYLOAD_BYTES)


def _tiles(residual: np.ndarray, period: int) -> np.ndarray:
    """The image cut into period×period tiles (zero-padded at the far edges), as an (n, period, period) stack,
    without the tiles that are zero throughout: those in the corners a turn brings in (a fifth of the turned frame
    at 40°) add nothing to the fold or to the noise spectrum, which is only ever used up to a constant factor."""
    height, width = residual.shape
    rows, cols = math.ceil(height / period), math.ceil(width / period)
    padded = np.zeros((rows * period, cols * period), dtype=np.float32)
    padded[:height, :width] = residual
    tiles = padded.reshape(rows, period, cols, period).transpose(0, 2, 1, 3).reshape(-1, period, period)
    filled = tiles.any(axis=(1, 2))
    return tiles[filled] if filled.any() else tiles[:1]


def _to_tile_spectrum(spectrum: np.ndarray, period: int) -> np.ndarray:
    """A period×period rfft2 spectrum resampled to TILE×TILE by keeping or zero-filling frequencies: a scaled
    copy of the mark becomes the unscaled tile."""
    if period == TILE:
        return spectrum
    out = np.zeros((TILE, TILE // 2 + 1), dtype=spectrum.dtype)
    half = min(period, TILE) // 2
    out[:half, : half + 1] = spectrum[:half, : half + 1]
    out[-half:, : half + 1] = spectrum[-half:, : half + 1]
    return out
