"""`verify_image` and `imagine verify`: watermark and metadata per image, the job it maps to, exit codes, bad
files; and the whole path from the engine's real tiny pipeline through the job store to `imagine verify`."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from bench.image_samples import crop, jpeg, resize, sample_image
from bots.cli import main
from config.settings import ProvenanceSettings
from engine.local import LocalJobQueue
from engine.postprocess import ImageContext
from engine.provenance import ProvenancePostProcessor, verify_file, verify_image, watermark_payload
from engine.requests import GeneratedImage, GenerationRequest, JobState
from engine.store import JobRecord, JobStore
from tests.support import make_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def marked_jpeg() -> bytes:
    context = ImageContext(job_id="job-7", index=3, seed=1, prompt="a fox", model="tiny-sd-v1")
    image = sample_image("photo", seed=21, width=768, height=768)
    return ProvenancePostProcessor(ProvenanceSettings())(image, context).jpeg


@pytest.fixture
def files(tmp_path: Path, marked_jpeg: bytes) -> dict[str, Path]:
    paths = {
        name: tmp_path / name
        for name in ("marked.jpg", "plain.png", "empty.jpg", "truncated.jpg", "notes.txt", "reshared.jpg")
    }
    paths["marked.jpg"].write_bytes(marked_jpeg)
    sample_image("photo", seed=21, width=768, height=768).save(paths["plain.png"])
    paths["empty.jpg"].write_bytes(b"")
    paths["truncated.jpg"].write_bytes(marked_jpeg[: len(marked_jpeg) // 3])
    paths["notes.txt"].write_text("not an image\n")
    reshared = jpeg(resize(crop(Image.open(io.BytesIO(marked_jpeg)), "top"), 0.5), 60)
    reshared.save(paths["reshared.jpg"])  # metadata gone, watermark still there
    return paths


def test_verify_image_reports_watermark_job_and_metadata(marked_jpeg: bytes) -> None:
    expected_id = watermark_payload("job-7", 3).hex()
    report = verify_image(marked_jpeg, lookup={expected_id: ("job-7", 3)}.get, source="a.jpg")
    assert report.readable and report.error is None
    assert report.watermark_found and report.watermark_id == expected_id
    assert (report.job_id, report.image_index) == ("job-7", 3)
    assert report.metadata_found and "tiny-sd-v1" in (report.software or "")
    assert (report.format, report.width, report.height) == ("JPEG", 768, 768)


def test_verify_image_without_lookup_or_unknown_id(marked_jpeg: bytes) -> None:
    assert verify_image(marked_jpeg).job_id is None
    report = verify_image(marked_jpeg, lookup=lambda watermark_id: None)
    assert report.watermark_found and report.job_id is None


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.jpg", "empty file"),
        ("truncated.jpg", "truncated"),
        ("notes.txt", "not an image"),
    ],
)
def test_bad_files_give_a_clear_error(files: dict[str, Path], name: str, message: str) -> None:
    report = verify_file(files[name])
    assert not report.readable and not report.watermark_found
    assert message in (report.error or "")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert verify_file(tmp_path / "nope.jpg").error == "no such file"
    assert "directory" in (verify_file(tmp_path).error or "")


def test_cli_exit_0_when_every_image_is_marked(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_STORE__URL", f"sqlite:///{tmp_path}/none.db")
    assert main(["verify", str(files["marked.jpg"]), str(files["reshared.jpg"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{files['marked.jpg']}: watermark found, id {watermark_payload('job-7', 3).hex()}")
    assert out[0].endswith("AI metadata: yes")
    assert "watermark found" in out[1] and out[1].endswith("AI metadata: no")
    assert not (tmp_path / "none.db").exists()  # verifying never creates a job store


def test_cli_exit_1_when_one_image_is_not_marked(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--json", str(files["marked.jpg"]), str(files["plain.png"])]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["all_marked"] is False
    assert [image["watermark_found"] for image in report["images"]] == [True, False]
    assert report["images"][1]["metadata_found"] is False


def test_cli_exit_2_on_unreadable_input_still_reports_the_others(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["marked.jpg", "empty.jpg", "truncated.jpg", "notes.txt", "plain.png"]
    assert main(["verify", *[str(files[name]) for name in names]]) == 2
    captured = capsys.readouterr()
    assert "watermark found" in captured.out and "no watermark" in captured.out
    for name in ("empty.jpg", "truncated.jpg", "notes.txt"):
        assert f"error: {files[name]}:" in captured.err
    assert "Traceback" not in captured.err


def test_cli_json_reports_unreadable_images(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--json", str(files["notes.txt"])]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["images"][0]["readable"] is False and report["images"][0]["error"]


def test_cli_names_the_job_from_the_store(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"

    async def journal() -> None:
        store = await JobStore.open(url)
        await store.add(
            JobRecord(
                id="job-7",
                request=GenerationRequest(prompt="a fox"),
                seeds=(1, 2, 3, 4),
                width=768,
                height=768,
                steps=4,
                state=JobState.RUNNING,
                created_at=time.time(),
            )
        )
        await store.set_done(
            "job-7",
            [
                GeneratedImage(
                    index=3,
                    seed=4,
                    path="x.jpg",
                    width=768,
                    height=768,
                    watermark_id=watermark_payload("job-7", 3).hex(),
                )
            ],
        )
        await store.close()

    asyncio.run(journal())
    monkeypatch.setenv("IMAGINE_STORE__URL", url)
    assert main(["verify", "--json", str(files["reshared.jpg"])]) == 0
    image = json.loads(capsys.readouterr().out)["images"][0]
    assert (image["job_id"], image["image_index"]) == ("job-7", 3)


@pytest.mark.timeout(120)
def test_cli_as_a_subprocess(files: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bots", "verify", str(files["marked.jpg"]), str(files["empty.jpg"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 2
    assert "watermark found" in result.stdout
    assert "empty file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(600)
async def test_engine_output_verifies_to_its_job(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The real tiny pipeline's noise-like 1280² image, through the engine and its store, then re-shared."""
    settings = make_settings(tmp_path, tiny_model_dir, steps=1)
    engine = LocalJobQueue(settings)
    await engine.start()
    try:
        job = await engine.submit(GenerationRequest(prompt="a lighthouse at dawn", seed=3, num_images=1))
        result = await job.result()
    finally:
        await engine.shutdown()
    (image,) = result.images
    assert image.watermark_id == watermark_payload(result.job_id, 0).hex()
    with Image.open(image.path) as delivered:
        assert delivered.size == (1280, 1280)
        reshared = jpeg(resize(crop(delivered, "left"), 0.5), 60)
    reshared.save(tmp_path / "reshared.jpg")
    report = await asyncio.to_thread(verify_file, tmp_path / "reshared.jpg")
    assert report.watermark_found, "the tiny model's image lost its mark after crop + resize + JPEG 60"
    store = await JobStore.open(settings.store.url)
    try:
        found = await store.find_image_by_watermark(report.watermark_id or "")
    finally:
        await store.close()
    assert found == (result.job_id, 0)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "CMYK", "I;16"])
def test_flat_images_in_any_mode_are_checked_without_errors(mode: str) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (320, 240)).save(buffer, format="JPEG" if mode == "CMYK" else "PNG")
    report = verify_image(buffer.getvalue())
    assert report.readable and not report.watermark_found and not report.metadata_found
