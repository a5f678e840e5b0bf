"""The service's post-processor: visible label → invisible watermark → JPEG with AI metadata → signed C2PA manifest."""

from __future__ import annotations

import hashlib
import os

from PIL import Image

from config.settings import ProvenanceSettings
from engine.postprocess import ImageContext, ProcessedImage, encode_jpeg
from engine.provenance import c2pa_manifest, label, metadata, watermark


def watermark_payload(job_id: str, index: int) -> bytes:
    """The payload that identifies one image: the first 48 bits of SHA-256 over its job id and index."""
    return hashlib.sha256(f"{job_id}:{index}".encode()).digest()[: watermark.PAYLOAD_BYTES]


class ProvenancePostProcessor:
    def __init__(
        self, settings: ProvenanceSettings, jpeg_quality: int = 90, cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        """cache_dir holds the development signing pair when no certificate is configured (without one, a pair
        lives in memory for this process). Raises CredentialError (a ConfigError) for an unusable cert or key."""
        self.settings = settings
        self.jpeg_quality = jpeg_quality
        self.signer = None
        if settings.c2pa:
            credentials = c2pa_manifest.resolve_credentials(settings.c2pa_cert, settings.c2pa_key, cache_dir)
            self.signer = c2pa_manifest.ManifestSigner(credentials)

    def __call__(self, image: Image.Image, context: ImageContext) -> ProcessedImage:
        image = label.add_label(image, self.settings.label_text)
        payload = None
        if self.settings.watermark:
            payload = watermark_payload(context.job_id, context.index)
            image = watermark.embed(image, payload)
        save_options = metadata.save_options(context.model, context.from_image) if self.settings.metadata else {}
        jpeg = encode_jpeg(image, self.jpeg_quality, **save_options)
        if self.signer is not None:
            jpeg = self.signer.sign(jpeg, context.model, payload)
        return ProcessedImage(jpeg=jpeg, watermark_id=payload.hex() if payload else None)
