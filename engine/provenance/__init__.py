"""Provenance: every delivered image says it was made by AI, to people (a visible label) and to machines (an
invisible watermark that survives re-compression, resizing and cropping, plus IPTC/EXIF metadata).

`ProvenancePostProcessor` is the engine's post-processing hook; `verify_image` checks an image for all of it.
"""

from engine.provenance.postprocessor import ProvenancePostProcessor, watermark_payload
from engine.provenance.verify import VerifyReport, verify_file, verify_image

__all__ = ["ProvenancePostProcessor", "VerifyReport", "verify_file", "verify_image", "watermark_payload"]
