"""The invisible watermark: a 48-bit payload in a tiled, texture-masked luma pattern that survives JPEG, resizing
and cropping.

Embedding. The pattern lives in luma only (4:2:0 JPEG subsampling wipes chroma). One 256×256 tile holds 32×32
chips of 8×8 px, each a smooth bump times ±1: coarse enough to survive JPEG quality 60 after a 50% resize. A
fixed quarter of the chips are pilots (a known sync sequence); the others carry the payload, CRC-framed and
convolutionally coded (`coding`), each code symbol spread over about three chips with pseudo-random signs. The
tile repeats over the whole image, so a crop only shifts the grid. The amplitude follows local texture
(stronger where the eye does not see it) and is normalised to a fixed PSNR.

Detection. High-pass and normalise the luma so that image content does not dominate, cut it into tiles of the
watermark's period and add them up ("fold"): the pattern adds coherently, the image does not. The fold is
whitened by the tiles' own power spectrum, the grid offset is the peak of its FFT cross-correlation with the
pilots, and the chips are then read, Viterbi-decoded and CRC-checked. A mark is reported only when the sync
peak is far above chance AND the CRC checks out. Periods tried: the original (256 px), half (a 50% resize),
then whatever period the image's autocorrelation shows (any other resize).

Everything here is fixed forever for version 1 of the mark: changing a constant or the seed makes earlier images
unverifiable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from scipy import fft

from engine.provenance import coding

PAYLOAD_BYTES = 6
TILE = 256
CHIP = 8
GRID = TILE // CHIP
PILOT_CHIPS = GRID * GRID // 4
LAYOUT_SEED = 0x1A9E_0001
TARGET_PSNR_DB = 42.0
SYNC_THRESHOLD = 8.0
"""Pilot correlation peak, in units of its noise, needed to accept a mark (the CRC must check out too).
Unmarked images peak at about 4.5 (the largest of 65,536 roughly Gaussian values, with a heavier tail: up to
~7 in thousands of tries); marked ones after the hardest required attacks at 12 or more."""
MAX_SIDE = 4096
MIN_PERIOD = 48
"""The smallest period the detector looks for: marks shrunk below ~20% have lost their chips anyway."""

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


def _pilot_spectrum() -> np.ndarray:
    chips = np.zeros(GRID * GRID, dtype=np.float32)
    chips[_PILOTS] = _SIGNS[_PILOTS]
    return np.conj(fft.rfft2(_chips_to_pixels(chips)))


_PILOT_SPECTRUM = _pilot_spectrum()
_FREQUENCY = np.hypot(fft.fftfreq(TILE)[:, None], fft.rfftfreq(TILE)[None, :])
_BAND = _FREQUENCY <= 0.25  # the chips' energy lies below this; above it is only image and JPEG noise


@dataclass(frozen=True)
class Detection:
    payload: bytes
    sync_score: float
    """Pilot correlation peak in units of its noise; SYNC_THRESHOLD is the bar."""
    period: float
    """Tile size found, in pixels of the examined image: 256 unscaled, 128 after a 50% resize."""

    @property
    def watermark_id(self) -> str:
        return self.payload.hex()


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
    for period in _candidate_periods(residual):
        sync_score, whitened_fold, offset = _synchronise(residual, period)
        if sync_score >= SYNC_THRESHOLD:
            payload = _read_payload(whitened_fold, offset)
            if payload is not None:
                return Detection(payload, sync_score, period)
    return None


def peak_sync_score(image: Image.Image) -> float:
    """The strongest pilot correlation over every period `detect` tries: how close an image comes to passing
    the sync test (for calibration and benchmarks)."""
    luma = _examined_luma(image)
    if min(luma.shape) < MIN_PERIOD:
        return 0.0
    residual = _prefilter(luma)
    return max(_synchronise(residual, period)[0] for period in _candidate_periods(residual))


def _examined_luma(image: Image.Image) -> np.ndarray:
    """Luma as float32; an image larger than MAX_SIDE (only an upscaled copy could carry a mark) is shrunk
    first, which keeps time and memory bounded for any upload."""
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BOX)
    return np.asarray(image.convert("L"), dtype=np.float32)


def _candidate_periods(residual: np.ndarray) -> Iterator[float]:
    """The original size, a 50% resize, then what the autocorrelation suggests (computed only if needed)."""
    tried = [float(TILE), TILE / 2]
    yield from tried
    for period in _autocorrelation_periods(residual):
        if all(abs(period - earlier) > 0.01 * earlier for earlier in tried):
            tried.append(period)
            yield period


def _autocorrelation_periods(residual: np.ndarray, peaks: int = 2) -> list[float]:
    """A periodic mark puts lines in the power spectrum and peaks at its period (or a multiple) in the
    autocorrelation. Flattening the spectrum first keeps the lines and drops the image's smooth spectrum."""
    power = np.abs(fft.rfft2(residual)) ** 2
    flattened = power / (cv2.blur(power, (9, 9)) + 1e-6 * float(power.mean()) + 1e-12)
    autocorrelation = fft.irfft2(flattened, s=residual.shape)
    longest = min(residual.shape) // 2
    profile = autocorrelation[0, :longest] + autocorrelation[:longest, 0]
    periods: list[float] = []
    for lag in np.argsort(profile[MIN_PERIOD : longest - 1])[::-1] + MIN_PERIOD:
        if len(periods) == 2 * peaks:
            break
        if any(abs(lag - p) <= 2 for p in periods):
            continue  # the same peak again
        left, centre, right = profile[lag - 1], profile[lag], profile[lag + 1]
        curvature = left - 2 * centre + right
        peak = float(lag + (0.5 * (left - right) / curvature if curvature < 0 else 0.0))
        periods += [peak, peak / 2]
    return [p for p in periods if p >= MIN_PERIOD]


def _prefilter(luma: np.ndarray) -> np.ndarray:
    """Remove the image's smooth content and equalise its local contrast, so that the mark stands out and no
    single busy region dominates the fold. Box filters applied twice: nearly Gaussian, several times faster."""
    residual = luma - _smooth(luma, 11)
    local_rms = np.sqrt(np.maximum(_smooth(residual * residual, 21), 0.0)) + 1.0  # running sums can dip below 0
    return np.clip(residual / local_rms, -3.0, 3.0)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    return cv2.blur(cv2.blur(values, (width, width)), (width, width))


def _synchronise(residual: np.ndarray, period: float) -> tuple[float, np.ndarray, tuple[int, int]]:
    """Fold the prefiltered image at `period`, whiten the fold and find the grid offset: (sync score, whitened
    fold spectrum at the tile size, offset)."""
    whole = round(period)
    if whole != period:  # resample slightly so that the period is a whole number of pixels
        factor = whole / period
        residual = cv2.resize(residual, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    spectra = fft.rfft2(_tiles(residual, whole))
    noise = cv2.blur((np.abs(spectra) ** 2).mean(axis=0).astype(np.float32), (5, 5), borderType=cv2.BORDER_REFLECT)
    fold, noise = _to_tile_spectrum(spectra.sum(axis=0), whole), _to_tile_spectrum(noise, whole).real
    floor = 0.1 * float(np.median(noise[_BAND])) + 1e-12
    whitened = np.where(_BAND, fold / (noise + floor), 0)
    correlation = fft.irfft2(whitened * _PILOT_SPECTRUM, s=(TILE, TILE))
    row, col = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
    sync_score = float((correlation[row, col] - correlation.mean()) / (correlation.std() + 1e-12))
    return sync_score, whitened, (int(row), int(col))


def _read_payload(whitened_fold: np.ndarray, offset: tuple[int, int]) -> bytes | None:
    """Correlate each chip of the aligned fold with its bump, gather chips into code symbols, decode."""
    aligned = np.roll(fft.irfft2(whitened_fold, s=(TILE, TILE)), (-offset[0], -offset[1]), axis=(0, 1))
    chips = np.einsum("iajb,ab->ij", aligned.reshape(GRID, CHIP, GRID, CHIP), _BUMP).ravel()
    soft = np.bincount(_SYMBOL_OF_CHIP, weights=chips[_DATA] * _SIGNS[_DATA], minlength=_SYMBOLS)
    return coding.decode(soft, PAYLOAD_BYTES)


def _tiles(residual: np.ndarray, period: int) -> np.ndarray:
    """The image cut into period×period tiles (zero-padded at the far edges), as an (n, period, period) stack."""
    height, width = residual.shape
    rows, cols = math.ceil(height / period), math.ceil(width / period)
    padded = np.zeros((rows * period, cols * period), dtype=np.float32)
    padded[:height, :width] = residual
    return padded.reshape(rows, period, cols, period).transpose(0, 2, 1, 3).reshape(-1, period, period)


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
