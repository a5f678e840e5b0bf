"""Content Credentials: the service's C2PA manifest validates with c2pa-python's own reader and says what it
must; an edited file fails its hard binding while the watermark still names its job; a stripped file is still
traced through the watermark; signing credentials come from configuration or a development pair, and no private
key ever shows up in output, logs or errors."""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import c2pa
import pytest
from PIL import Image

from bench.image_samples import jpeg, resize, rotate, sample_image
from bots.cli import main
from config.settings import ConfigError, ProvenanceSettings
from engine.postprocess import ImageContext
from engine.provenance import ProvenancePostProcessor, verify_image, watermark_payload
from engine.provenance.c2pa_manifest import (
    DEV_CHAIN_FILE,
    DEV_DIRECTORY,
    DEV_KEY_FILE,
    SOFT_BINDING_ALG,
    CredentialError,
    ManifestSigner,
    make_dev_certificate,
    read_manifest,
    resolve_credentials,
    service_trust_anchor,
)
from engine.provenance.metadata import TRAINED_ALGORITHMIC_MEDIA

REPO = Path(__file__).resolve().parents[1]
CONTEXT = ImageContext(job_id="job-c2pa", index=2, seed=1, prompt="a fox", model="tiny-sd-v1")
PAYLOAD = watermark_payload(CONTEXT.job_id, CONTEXT.index)
LOOKUP = {PAYLOAD.hex(): (CONTEXT.job_id, CONTEXT.index)}.get


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def signed(cache_dir: Path) -> bytes:
    """A delivered JPEG, as the service makes it, signed with the development pair under cache_dir."""
    postprocess = ProvenancePostProcessor(ProvenanceSettings(), jpeg_quality=90, cache_dir=cache_dir)
    return postprocess(sample_image("photo", seed=31, width=768, height=768), CONTEXT).jpeg


def _store(data: bytes, settings: dict | None = None) -> dict:
    """What c2pa-python's Reader makes of the file: the manifest store with its validation results."""
    context = c2pa.Context(c2pa.Settings.from_dict(settings)) if settings else None
    with c2pa.Reader("image/jpeg", io.BytesIO(data), None, context) as reader:
        return json.loads(reader.json())


def _codes(store: dict, kind: str) -> set[str]:
    return {item["code"] for item in store["validation_results"]["activeManifest"].get(kind, [])}


def _scan_start(data: bytes) -> int:
    """Offset of the JPEG's start-of-scan marker, walking the segments (the manifest's bytes may hold 0xFFDA)."""
    offset = 2
    while data[offset : offset + 2] != b"\xff\xda":
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return offset


def _one_pixel_edited(signed: bytes) -> bytes:
    """What a one-pixel retouch that keeps the file's metadata produces: the signed file's headers (manifest
    included) in front of the re-encoded, edited picture."""
    with Image.open(io.BytesIO(signed)) as image:
        edited = image.convert("RGB")
        options = {"exif": image.getexif().tobytes(), "xmp": image.info["xmp"]}
    edited.putpixel((300, 300), (255, 0, 0))
    buffer = io.BytesIO()
    edited.save(buffer, format="JPEG", quality=90, **options)
    fresh = buffer.getvalue()
    return signed[: _scan_start(signed)] + fresh[_scan_start(fresh) :]


def test_service_manifest_validates_with_the_c2pa_reader(signed: bytes) -> None:
    store = _store(signed)
    assert store["validation_state"] == "Valid"
    assert _codes(store, "failure") <= {"signingCredential.untrusted"}  # a development signer: valid, not trusted
    assert {"claimSignature.validated", "assertion.dataHash.match"} <= _codes(store, "success")


def test_manifest_says_what_made_the_image_and_names_the_watermark(signed: bytes) -> None:
    active = (store := _store(signed))["manifests"][store["active_manifest"]]
    assert active["claim_generator_info"][0]["name"] == "imagine"
    assertions = {assertion["label"]: assertion["data"] for assertion in active["assertions"]}
    (created,) = [a for a in assertions["c2pa.actions.v2"]["actions"] if a["action"] == "c2pa.created"]
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert created["softwareAgent"]["name"] == "tiny-sd-v1"
    binding = assertions["c2pa.soft-binding"]
    assert binding["alg"] == SOFT_BINDING_ALG
    assert base64.b64decode(binding["blocks"][0]["value"]) == PAYLOAD


def test_manifest_is_trusted_by_the_services_own_root(signed: bytes, cache_dir: Path) -> None:
    anchor = service_trust_anchor("", cache_dir)
    assert anchor is not None and "PRIVATE" not in anchor
    assert _store(signed, {"trust": {"trust_anchors": anchor}})["validation_state"] == "Trusted"
    other_root = service_trust_anchor(str(make_dev_certificate(cache_dir / "other")[0]), None)
    assert read_manifest(signed, other_root).trusted is False


def test_one_pixel_edit_breaks_the_hard_binding_but_the_watermark_still_names_the_job(signed: bytes) -> None:
    tampered = _one_pixel_edited(signed)
    store = _store(tampered)
    assert store["validation_state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in _codes(store, "failure")
    report = verify_image(tampered, LOOKUP)
    assert report.manifest_found and report.manifest_valid is False
    assert "assertion.dataHash.mismatch" in report.manifest_issues
    assert report.watermark_found and (report.job_id, report.image_index) == (CONTEXT.job_id, CONTEXT.index)
    assert report.manifest_matches_watermark is True


def test_stripped_file_is_still_traced_through_the_watermark(signed: bytes) -> None:
    with Image.open(io.BytesIO(signed)) as image:
        stripped = io.BytesIO()
        image.save(stripped, format="JPEG", quality=85)  # Pillow keeps no APP11: manifest and metadata gone
    with pytest.raises(c2pa.C2paError):
        c2pa.Reader("image/jpeg", io.BytesIO(stripped.getvalue()))
    report = verify_image(stripped.getvalue(), LOOKUP)
    assert not report.manifest_found and report.manifest_valid is None and not report.metadata_found
    assert report.watermark_found and (report.job_id, report.image_index) == (CONTEXT.job_id, CONTEXT.index)
    assert report.manifest_matches_watermark is None


def test_stripped_and_turned_file_reports_the_transformation(signed: bytes) -> None:
    with Image.open(io.BytesIO(signed)) as image:
        reshared = jpeg(resize(rotate(image.convert("RGB"), -3), 0.8), 75)
    buffer = io.BytesIO()
    reshared.save(buffer, format="PNG")
    report = verify_image(buffer.getvalue(), LOOKUP)
    assert report.watermark_found and report.job_id == CONTEXT.job_id
    assert report.watermark_transformation == "scaled to 80%, rotated 3.0° clockwise"


def test_verify_reports_a_valid_manifest_that_agrees_with_the_watermark(signed: bytes) -> None:
    report = verify_image(signed, LOOKUP)
    assert report.manifest_found and report.manifest_valid and report.manifest_trusted is False
    assert report.manifest_watermark_id == report.watermark_id == PAYLOAD.hex()
    assert report.manifest_matches_watermark is True
    assert report.manifest_model == "tiny-sd-v1"
    assert report.watermark_transformation == "as delivered"


def test_verify_notices_a_manifest_naming_another_watermark(signed: bytes, cache_dir: Path) -> None:
    with Image.open(io.BytesIO(signed)) as image:
        rewrapped = io.BytesIO()
        image.save(rewrapped, format="JPEG", quality=90)
    signer = ManifestSigner(resolve_credentials("", "", cache_dir))
    forged = signer.sign(rewrapped.getvalue(), "tiny-sd-v1", watermark_payload("another-job", 0))
    report = verify_image(forged, LOOKUP)
    assert report.manifest_valid and report.watermark_id == PAYLOAD.hex()
    assert report.manifest_matches_watermark is False


def test_development_pair_is_made_once_under_the_cache_dir(cache_dir: Path, signed: bytes) -> None:
    folder = cache_dir / DEV_DIRECTORY
    chain = (folder / DEV_CHAIN_FILE).read_bytes()
    assert (folder / DEV_KEY_FILE).stat().st_mode & 0o777 == 0o600
    again = ProvenancePostProcessor(ProvenanceSettings(), cache_dir=cache_dir)
    assert again.signer is not None and again.signer.credentials.chain_pem == chain
    assert again.signer.credentials.origin == "development"


def test_configured_certificate_signs(tmp_path: Path, signed: bytes) -> None:
    chain, key = make_dev_certificate(tmp_path / "mine")
    settings = ProvenanceSettings(c2pa_cert=str(chain), c2pa_key=str(key))
    made = ProvenancePostProcessor(settings, cache_dir=tmp_path / "cache")(Image.new("RGB", (256, 256)), CONTEXT)
    assert not (tmp_path / "cache").exists()  # no development pair made when one is configured
    assert read_manifest(made.jpeg, service_trust_anchor(str(chain), None)).trusted is True
    assert read_manifest(signed, service_trust_anchor(str(chain), None)).trusted is False


def test_bad_credentials_fail_clearly_without_showing_the_key(tmp_path: Path) -> None:
    chain, key = make_dev_certificate(tmp_path / "a")
    _, other_key = make_dev_certificate(tmp_path / "b")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    cases = {
        (str(chain), str(other_key)): "does not belong",
        (str(chain), str(tmp_path / "missing.pem")): "no such file",
        (str(chain), str(garbage)): "not an unencrypted PEM private key",
        (str(key), str(key)): "holds no PEM certificate",
        (str(chain), ""): "must be set together",
    }
    secrets = [key.read_text(), other_key.read_text()]
    for (cert_path, key_path), message in cases.items():
        with pytest.raises(CredentialError, match=message) as raised:
            ProvenancePostProcessor(ProvenanceSettings(c2pa_cert=cert_path, c2pa_key=key_path))
        assert isinstance(raised.value, ConfigError)  # the CLI prints it as one line, exit 2
        text = str(raised.value)
        assert "PRIVATE KEY" not in text and not any(secret.splitlines()[1] in text for secret in secrets)


def test_no_private_key_in_logs_or_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    assert main(["-v", "provenance", "make-dev-cert", str(tmp_path / "keys")]) == 0
    postprocess = ProvenancePostProcessor(ProvenanceSettings(), cache_dir=tmp_path / "cache")
    processed = postprocess(sample_image("texture", seed=2, width=256, height=256), CONTEXT)
    (tmp_path / "x.jpg").write_bytes(processed.jpeg)
    assert main(["verify", "--json", str(tmp_path / "x.jpg")]) == 0
    printed = capsys.readouterr()
    keys = [
        (tmp_path / "keys" / DEV_KEY_FILE).read_text(),
        (tmp_path / "cache" / DEV_DIRECTORY / DEV_KEY_FILE).read_text(),
    ]
    for text in (printed.out, printed.err, caplog.text, repr(postprocess.signer.credentials)):
        assert "PRIVATE KEY" not in text
        assert not any(line in text for key in keys for line in key.splitlines()[1:-1])


def test_make_dev_cert_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "keys"
    assert main(["provenance", "make-dev-cert", str(target)]) == 0
    out = capsys.readouterr().out
    assert f'c2pa_cert = "{target / DEV_CHAIN_FILE}"' in out and f'c2pa_key = "{target / DEV_KEY_FILE}"' in out
    first = (target / DEV_KEY_FILE).read_bytes()
    assert main(["provenance", "make-dev-cert", str(target)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (target / DEV_KEY_FILE).read_bytes() == first
    assert main(["provenance", "make-dev-cert", "--force", str(target)]) == 0
    assert (target / DEV_KEY_FILE).read_bytes() != first


def test_make_dev_cert_defaults_to_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINE_ENGINE__CACHE_DIR", str(tmp_path / "cache"))
    assert main(["provenance", "make-dev-cert"]) == 0
    assert (tmp_path / "cache" / DEV_DIRECTORY / DEV_CHAIN_FILE).is_file()


def test_cli_verify_shows_manifest_state(
    signed: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cache_dir: Path
) -> None:
    monkeypatch.setenv("IMAGINE_ENGINE__CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("IMAGINE_STORE__URL", f"sqlite:///{tmp_path}/none.db")
    (tmp_path / "signed.jpg").write_bytes(signed)
    (tmp_path / "edited.jpg").write_bytes(_one_pixel_edited(signed))
    Image.open(io.BytesIO(signed)).save(tmp_path / "stripped.png")
    assert main(["verify", *(str(tmp_path / name) for name in ("signed.jpg", "edited.jpg", "stripped.png"))]) == 0
    signed_line, edited_line, stripped_line = capsys.readouterr().out.splitlines()
    assert "as delivered; C2PA manifest: valid, signed by imagine development signer" in signed_line
    assert "(trusted), names this watermark" in signed_line  # the service's own development root
    assert "C2PA manifest: INVALID (assertion.dataHash.mismatch" in edited_line
    assert "C2PA manifest: none (never signed, or stripped)" in stripped_line
    assert main(["verify", "--json", str(tmp_path / "edited.jpg")]) == 0
    (image,) = json.loads(capsys.readouterr().out)["images"]
    assert image["manifest_found"] is True and image["manifest_valid"] is False
    assert image["manifest_matches_watermark"] is True and image["watermark_transformation"] == "as delivered"


def test_manifest_can_be_switched_off() -> None:
    made = ProvenancePostProcessor(ProvenanceSettings(c2pa=False))(Image.new("RGB", (256, 256)), CONTEXT)
    assert not read_manifest(made.jpeg).found


def test_verifying_loads_no_torch() -> None:
    """The provenance package and the verify and provenance commands stay light: no torch, no diffusers."""
    code = (
        "import sys\n"
        "import engine.provenance, engine.provenance.c2pa_manifest, engine.provenance.geometry\n"
        "import bots.cli.verify, bots.cli.provenance\n"
        "loaded = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
