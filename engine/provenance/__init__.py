"""Provenance: every delivered image says it was made by AI, to people (a visible label) and to machines (an
invisible watermark that survives re-compression, resizing, cropping, rotation and mirroring; IPTC/EXIF metadata;
and a signed C2PA manifest whose soft binding names the watermark, `c2pa_manifest`).

`ProvenancePostProcessor` is the engine's post-processing hook; `verify_image` checks an image for all of it.
"""

from engine.provenance.postprocessor import ProvenancePostProcessor, watermark_payload
from engine.provenance.verify import VerifyReport, verify_file, verify_image

__all__ = ["ProvenancePostProcessor", "VerifyReport", "verify_file", "verify_image", "watermark_payload"]
