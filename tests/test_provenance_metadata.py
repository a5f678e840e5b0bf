"""AI metadata in every delivered JPEG, and the post-processor honouring `settings.provenance`."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from bench.image_samples import sample_image
from config.settings import ProvenanceSettings, Settings, load_settings
from engine.postprocess import ImageContext
from engine.provenance import ProvenancePostProcessor, watermark, watermark_payload
from engine.provenance.metadata import EXIF_IMAGE_DESCRIPTION, EXIF_SOFTWARE, TRAINED_ALGORITHMIC_MEDIA, read_metadata
from engine.worker.finishing import build_postprocessor

CONTEXT = ImageContext(job_id="job-42", index=1, seed=5, prompt="a lighthouse", model="tiny-sd-v1")


def process(settings: ProvenanceSettings, image: Image.Image | None = None) -> tuple[bytes, str | None]:
    image = image or sample_image("photo", seed=1, width=512, height=512)
    processed = ProvenancePostProcessor(settings, jpeg_quality=90)(image, CONTEXT)
    return processed.jpeg, processed.watermark_id


def test_jpeg_declares_ai_origin_in_xmp_and_exif() -> None:
    jpeg, _ = process(ProvenanceSettings())
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        xmp = image.info["xmp"]
        assert b"Iptc4xmpExt:DigitalSourceType" in xmp and TRAINED_ALGORITHMIC_MEDIA.encode() in xmp
        exif = image.getexif()
        assert "imagine" in exif[EXIF_SOFTWARE] and "tiny-sd-v1" in exif[EXIF_SOFTWARE]
        assert "AI-generated" in exif[EXIF_IMAGE_DESCRIPTION] and "tiny-sd-v1" in exif[EXIF_IMAGE_DESCRIPTION]
        info = read_metadata(image)
    assert info.says_ai_generated
    assert info.digital_source_type == TRAINED_ALGORITHMIC_MEDIA


def test_metadata_survives_a_pillow_round_trip_that_keeps_it() -> None:
    jpeg, _ = process(ProvenanceSettings())
    with Image.open(io.BytesIO(jpeg)) as image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80, exif=image.getexif(), xmp=image.info["xmp"])
    with Image.open(io.BytesIO(buffer.getvalue())) as again:
        assert read_metadata(again).says_ai_generated
        assert "tiny-sd-v1" in (read_metadata(again).software or "")


def test_model_names_with_markup_characters_stay_well_formed() -> None:
    context = replace(CONTEXT, model='weird "model" <&>')
    jpeg = ProvenancePostProcessor(ProvenanceSettings())(Image.new("RGB", (64, 64)), context).jpeg
    with Image.open(io.BytesIO(jpeg)) as image:
        xmp = image.info["xmp"]
        assert b"&lt;&amp;&gt;" in xmp and b"<&>" not in xmp
        assert read_metadata(image).says_ai_generated


def test_metadata_is_small() -> None:
    plain = ProvenancePostProcessor(replace(ProvenanceSettings(), metadata=False))
    with_metadata = ProvenancePostProcessor(ProvenanceSettings())
    image = Image.new("RGB", (256, 256), (10, 20, 30))
    assert len(with_metadata(image, CONTEXT).jpeg) - len(plain(image, CONTEXT).jpeg) < 2000


def test_an_unmarked_image_has_no_ai_metadata() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="JPEG")
    with Image.open(buffer) as image:
        info = read_metadata(image)
    assert not info.says_ai_generated and info.software is None


def test_each_part_can_be_switched_off() -> None:
    image = sample_image("texture", seed=2, width=640, height=640)
    jpeg, watermark_id = process(ProvenanceSettings(label_text="", watermark=False, metadata=False), image)
    with Image.open(io.BytesIO(jpeg)) as decoded:
        assert "xmp" not in decoded.info and not read_metadata(decoded).says_ai_generated
        assert watermark.detect(decoded) is None
        assert watermark_id is None
        # no label either: the corner is the image's own, within JPEG error
        corner = np.asarray(decoded, dtype=np.int16)[-40:, -200:]
        original = np.asarray(image, dtype=np.int16)[-40:, -200:]
        assert np.abs(corner - original).mean() < 4


def test_build_postprocessor_uses_provenance_settings_and_jpeg_quality(tmp_path: Path) -> None:
    env = {
        "IMAGINE_PROVENANCE__LABEL_TEXT": "AI",
        "IMAGINE_ENGINE__JPEG_QUALITY": "75",
        "IMAGINE_ENGINE__CACHE_DIR": str(tmp_path),
    }
    postprocess = build_postprocessor(load_settings(env=env))
    assert isinstance(postprocess, ProvenancePostProcessor)
    assert postprocess.settings.label_text == "AI" and postprocess.jpeg_quality == 75
    assert (tmp_path / "c2pa" / "dev-signer-chain.pem").is_file()  # the development signing pair lives there
    settings = replace(Settings(), engine=replace(Settings().engine, cache_dir=str(tmp_path)))
    processed = build_postprocessor(settings)(sample_image("photo", seed=4, width=512, height=512), CONTEXT)
    assert processed.watermark_id == watermark_payload(CONTEXT.job_id, CONTEXT.index).hex()
    with Image.open(io.BytesIO(processed.jpeg)) as decoded:
        found = watermark.detect(decoded)
        assert found is not None and found.watermark_id == processed.watermark_id
        assert read_metadata(decoded).says_ai_generated
