"""The service's post-processor: visible label → invisible watermark → JPEG with AI metadata."""

from __future__ import annotations

import hashlib

from PIL import Image

from config.settings import ProvenanceSettings
from engine.postprocess import ImageContext, ProcessedImage, encode_jpeg
from engine.provenance import label, metadata, watermark


def watermark_payload(job_id: str, index: int) -> bytes:
    """The payload that identifies one image: the first 48 bits of SHA-256 over its job id and index."""
    return hashlib.sha256(f"{job_id}:{index}".encode()).digest()[: watermark.PAYLOAD_BYTES]


class ProvenancePostProcessor:
    def __init__(self, settings: ProvenanceSettings, jpeg_quality: int = 90) -> None:
        self.settings = settings
        self.jpeg_quality = jpeg_quality

    def __call__(self, image: Image.Image, context: ImageContext) -> ProcessedImage:
        image = label.add_label(image, self.settings.label_text)
        watermark_id = None
        if self.settings.watermark:
            payload = watermark_payload(context.job_id, context.index)
            image = watermark.embed(image, payload)
            watermark_id = payload.hex()
        save_options = metadata.save_options(context.model) if self.settings.metadata else {}
        return ProcessedImage(jpeg=encode_jpeg(image, self.jpeg_quality, **save_options), watermark_id=watermark_id)
