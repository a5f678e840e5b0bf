"""Checking an image for provenance: is the watermark there, which image does it name, does it carry AI metadata.

`verify_image(data, lookup)` works on bytes (a bot's attachment, a dashboard upload); `verify_file(path,
lookup)` on a file. `lookup` maps a watermark id to (job id, image index), usually
`engine.store.open_store(url).find_image_by_watermark`. Neither raises for bad input: an unreadable image gives
a report with `readable=False` and a one-line `error`. Both are CPU-bound (tens of milliseconds): call them from
a thread, not from an event loop.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

from PIL import Image, UnidentifiedImageError

from engine.provenance import metadata, watermark

Lookup = Callable[[str], tuple[str, int] | None]


@dataclass(frozen=True)
class VerifyReport:
    source: str
    readable: bool
    error: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    watermark_found: bool = False
    watermark_id: str | None = None
    sync_score: float | None = None
    job_id: str | None = None
    image_index: int | None = None
    metadata_found: bool = False
    digital_source_type: str | None = None
    software: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def verify_file(path: str | os.PathLike[str], lookup: Lookup | None = None) -> VerifyReport:
    source = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return VerifyReport(source, readable=False, error="no such file")
    except IsADirectoryError:
        return VerifyReport(source, readable=False, error="is a directory, not an image")
    except OSError as exc:
        return VerifyReport(source, readable=False, error=f"cannot read the file: {exc.strerror or exc}")
    return verify_image(data, lookup, source)


def verify_image(data: bytes, lookup: Lookup | None = None, source: str = "<image>") -> VerifyReport:
    if not data:
        return VerifyReport(source, readable=False, error="empty file")
    try:
        image = _open(data)
    except ValueError as exc:
        return VerifyReport(source, readable=False, error=str(exc))
    info = metadata.read_metadata(image)
    found = watermark.detect(image)
    job = lookup(found.watermark_id) if found is not None and lookup is not None else None
    return VerifyReport(
        source, readable=True, format=image.format, width=image.width, height=image.height,
        watermark_found=found is not None,
        watermark_id=found.watermark_id if found else None,
        sync_score=round(found.sync_score, 1) if found else None,
        job_id=job[0] if job else None, image_index=job[1] if job else None,
        metadata_found=info.says_ai_generated, digital_source_type=info.digital_source_type, software=info.software,
    )


def _open(data: bytes) -> Image.Image:
    """Decode the whole image now, turning every way a file can be bad into one ValueError with a clear line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except UnidentifiedImageError:
        raise ValueError("not an image (or a format Pillow cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError("image too large to check") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise ValueError(f"corrupt or truncated image: {exc}") from None
    return image
