"""Checking an image for provenance: is the watermark there (and under what transformation), which image does it
name, does the file carry a valid C2PA manifest and AI metadata, and do the manifest and the watermark agree.

`verify_image(data, lookup)` works on bytes (a bot's attachment, a dashboard upload); `verify_file(path,
lookup)` on a file. `lookup` maps a watermark id to (job id, image index), usually
`engine.store.open_store(url).find_image_by_watermark`; `trust_anchors` (PEM) are the certificates a manifest's
signer must chain to for `manifest_trusted`, usually this service's own root
(`c2pa_manifest.service_trust_anchor`). Neither raises for bad input: an unreadable image gives a report with
`readable=False` and a one-line `error`. Both are CPU-bound (up to a few hundred milliseconds for an image that
was turned or carries no mark): call them from a thread, not from an event loop.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

from PIL import Image, UnidentifiedImageError

from engine.provenance import c2pa_manifest, metadata, watermark

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
    watermark_transformation: str | None = None
    """What the image went through as far as the mark can tell: "as delivered", "rotated 2.0° clockwise", ..."""
    job_id: str | None = None
    image_index: int | None = None
    manifest_found: bool = False
    """A C2PA manifest is embedded (False: never had one, or it was stripped)."""
    manifest_valid: bool | None = None
    """Its signature and hash binding check out: the file is byte for byte what was signed."""
    manifest_trusted: bool | None = None
    manifest_issues: tuple[str, ...] = ()
    manifest_signer: str | None = None
    manifest_model: str | None = None
    manifest_watermark_id: str | None = None
    """The watermark payload the manifest's soft binding names."""
    manifest_matches_watermark: bool | None = None
    """Both present: whether the manifest names the mark found in the pixels (None if either is missing)."""
    metadata_found: bool = False
    digital_source_type: str | None = None
    software: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def verify_file(
    path: str | os.PathLike[str], lookup: Lookup | None = None, trust_anchors: str | None = None
) -> VerifyReport:
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
    return verify_image(data, lookup, source, trust_anchors)


def verify_image(
    data: bytes, lookup: Lookup | None = None, source: str = "<image>", trust_anchors: str | None = None
) -> VerifyReport:
    if not data:
        return VerifyReport(source, readable=False, error="empty file")
    try:
        image = _open(data)
    except ValueError as exc:
        return VerifyReport(source, readable=False, error=str(exc))
    info = metadata.read_metadata(image)
    found = watermark.detect(image)
    manifest = c2pa_manifest.read_manifest(data, trust_anchors)
    job = lookup(found.watermark_id) if found is not None and lookup is not None else None
    return VerifyReport(
        source,
        readable=True,
        format=image.format,
        width=image.width,
        height=image.height,
        watermark_found=found is not None,
        watermark_id=found.watermark_id if found else None,
        sync_score=round(found.sync_score, 1) if found else None,
        watermark_transformation=found.transformation if found else None,
        job_id=job[0] if job else None,
        image_index=job[1] if job else None,
        manifest_found=manifest.found,
        manifest_valid=manifest.valid,
        manifest_trusted=manifest.trusted,
        manifest_issues=manifest.issues,
        manifest_signer=manifest.signer,
        manifest_model=manifest.model,
        manifest_watermark_id=manifest.watermark_id,
        manifest_matches_watermark=(
            manifest.watermark_id == found.watermark_id if found and manifest.watermark_id else None
        ),
        metadata_found=info.says_ai_generated,
        digital_source_type=info.digital_source_type,
        software=info.software,
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
