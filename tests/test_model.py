"""The offline tiny model and the pipeline loader: real diffusers/transformers classes, no network."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bots.cli import main as cli_main
from config.settings import EngineSettings
from engine.worker.model import (
    TINY_MODEL_FOLDER,
    ModelUnavailable,
    choose_device,
    cpu_threads,
    load_model,
    model_name,
    resolve_model,
)
from engine.worker.tiny_model import TINY_MODEL_NAME, build_tiny_model, is_tiny_model

WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
)


def _cpu_settings(model: Path | str, **overrides: object) -> EngineSettings:
    return replace(EngineSettings(model=str(model), device="cpu"), **overrides)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{name}:{key}": tensor for name in WEIGHT_FILES for key, tensor in load_file(folder / name).items()}


def _assert_same_tensors(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    for key, tensor in left.items():
        assert torch.equal(tensor, right[key]), key


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return load_model(_cpu_settings(tiny_model_dir))


def test_the_tiny_model_is_a_stable_diffusion_pipeline_of_real_parts(tiny_model_dir: Path) -> None:
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"][1] == "CLIPTokenizer"
    assert index["safety_checker"] == [None, None]
    vae = json.loads((tiny_model_dir / "vae/config.json").read_text())
    assert len(vae["block_out_channels"]) == 4  # 8x downsampling, as in Stable Diffusion
    unet = json.loads((tiny_model_dir / "unet/config.json").read_text())
    assert unet["sample_size"] * 8 == 1280  # the pipeline's default size is the engine's base size
    assert all((tiny_model_dir / name).is_file() for name in WEIGHT_FILES)
    assert not list(tiny_model_dir.glob("**/*.bin"))  # safetensors only


def test_weights_round_trip_through_from_pretrained(tiny, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    pipe = tiny.pipeline
    loaded = {
        **{f"{WEIGHT_FILES[0]}:{k}": v for k, v in pipe.unet.state_dict().items()},
        **{f"{WEIGHT_FILES[1]}:{k}": v for k, v in pipe.vae.state_dict().items()},
        **{f"{WEIGHT_FILES[2]}:{k}": v for k, v in pipe.text_encoder.state_dict().items()},
    }
    saved = _weights(tiny_model_dir)
    loaded = {key: tensor for key, tensor in loaded.items() if key in saved}  # tied/derived buffers aside
    assert len(loaded) == len(saved)
    _assert_same_tensors(saved, loaded)


def test_building_twice_gives_identical_weights_and_tokenizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    _assert_same_tensors(_weights(tiny_model_dir), _weights(again))
    for name in ("tokenizer/tokenizer.json", "model_index.json", "scheduler/scheduler_config.json"):
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


def test_an_existing_model_is_kept_and_an_occupied_folder_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    stamp = (tiny_model_dir / "model_index.json").stat().st_mtime_ns
    assert build_tiny_model(tiny_model_dir) == tiny_model_dir
    assert (tiny_model_dir / "model_index.json").stat().st_mtime_ns == stamp
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_tiny_model(occupied)
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob(".*building*"))  # no staging folder left behind


def test_concurrent_builders_leave_one_complete_model(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(build_tiny_model(target))
        except BaseException as exc:  # reported below
            errors.append(exc)

    builders = [threading.Thread(target=build) for _ in range(2)]
    for builder in builders:
        builder.start()
    for builder in builders:
        builder.join()
    assert errors == []
    assert results == [target.resolve()] * 2
    assert is_tiny_model(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]


def test_builtin_tiny_is_built_under_the_cache_dir_on_first_use(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))
    path = resolve_model("builtin:tiny", "~/cache")
    assert path == str((tmp_path / "cache" / TINY_MODEL_FOLDER).resolve())
    assert is_tiny_model(Path(path))
    assert model_name("builtin:tiny") == TINY_MODEL_NAME


def test_a_local_folder_resolves_to_itself(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert resolve_model(str(tiny_model_dir), str(tmp_path)) == str(tiny_model_dir)
    assert model_name(str(tiny_model_dir)) == TINY_MODEL_NAME
    assert not list(tmp_path.iterdir())  # nothing built in the cache for a local folder


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/no/such/model", "does not exist"),
        ("./missing-model", "does not exist"),
        ("builtin:huge", "unknown built-in model"),
        ("not a model id!", "does not exist"),
    ],
)
def test_bad_specs_fail_with_a_clear_message(spec: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=expected) as caught:
        resolve_model(spec, str(tmp_path))
    assert "IMAGINE_ENGINE__MODEL" in str(caught.value)


def test_a_folder_that_is_not_a_pipeline_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelUnavailable, match="no model_index.json"):
        resolve_model(str(tmp_path / "weights"), str(tmp_path))


@pytest.mark.parametrize("offline", ["1", "0"])
def test_an_unreachable_hub_id_fails_with_the_clear_error(offline: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # offline=0: the download really tries the network, and the loopback guard makes that attempt fail.
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", offline == "1")
    with pytest.raises(ModelUnavailable, match="could not be reached") as caught:
        resolve_model("someone/some-sd-model", str(tmp_path))
    assert "engine.model" in str(caught.value) and "IMAGINE_ENGINE__MODEL" in str(caught.value)
    if offline == "0":  # the attempt was real: it is the guard's refusal that the clear error wraps
        assert type(caught.value.__cause__).__name__ == "NetworkGuardError"
    assert model_name("someone/some-sd-model") == "someone/some-sd-model"


def test_an_unavailable_device_is_refused_and_auto_picks_what_exists() -> None:
    device, dtype = choose_device("auto", "auto")
    if torch.cuda.is_available():
        assert (device.type, dtype) == ("cuda", torch.float16)
    elif not torch.backends.mps.is_available():
        assert (device.type, dtype) == ("cpu", torch.float32)
        with pytest.raises(ModelUnavailable, match="IMAGINE_ENGINE__DEVICE"):
            choose_device("cuda", "auto")
    assert choose_device("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)


def test_cpu_threads_use_every_core_this_process_may_use(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 5})
    assert cpu_threads() == 3


def test_cpu_threads_leave_an_explicit_omp_setting_alone(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == torch.get_num_threads()


def test_loaded_model_reports_what_it_is(tiny, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert tiny.info.name == TINY_MODEL_NAME
    assert tiny.info.path == str(tiny_model_dir)
    assert (tiny.info.device, tiny.info.dtype) == ("cpu", "float32")
    assert tiny.pipeline.vae.use_slicing


def _generate(pipe, seed: int, count: int = 2):  # type: ignore[no-untyped-def]
    return pipe(
        "a lighthouse at dawn, oil painting",
        height=128,
        width=128,
        num_inference_steps=2,
        num_images_per_prompt=count,
        generator=torch.Generator().manual_seed(seed),
    ).images


def test_small_generation_is_reproducible_per_seed(tiny) -> None:  # type: ignore[no-untyped-def]
    first = _generate(tiny.pipeline, seed=7)
    assert [image.size for image in first] == [(128, 128)] * 2
    assert all(image.mode == "RGB" for image in first)
    again = _generate(tiny.pipeline, seed=7)
    assert [image.tobytes() for image in again] == [image.tobytes() for image in first]
    other = _generate(tiny.pipeline, seed=8)
    assert other[0].tobytes() != first[0].tobytes()
    assert first[0].tobytes() != first[1].tobytes()  # the two images of one call differ too
    assert len(first[0].getcolors(maxcolors=128 * 128)) > 100  # a texture, not a flat colour


def test_cli_build_tiny_prints_the_folder(tmp_path: Path, tiny_model_dir: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The default folder is where builtin:tiny looks; an existing tiny model there is kept, so this stays fast.
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / TINY_MODEL_FOLDER).symlink_to(tiny_model_dir, target_is_directory=True)
    monkeypatch.setenv("IMAGINE_ENGINE__CACHE_DIR", str(tmp_path / "cache"))
    assert cli_main(["model", "build-tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_model_dir)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("x")
    assert cli_main(["model", "build-tiny", str(occupied)]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_a_tiny_model_of_an_older_architecture_is_rebuilt(tmp_path: Path) -> None:
    from dataclasses import replace

    from engine.worker.tiny_model import TINY_ARCHITECTURE, build_tiny_model

    target = tmp_path / "tiny"
    older = replace(TINY_ARCHITECTURE, text_layers=TINY_ARCHITECTURE.text_layers + 1)
    build_tiny_model(target, older)
    assert (
        json.loads((target / "imagine_tiny_model.json").read_text())["architecture"]["text_layers"] == older.text_layers
    )
    build_tiny_model(target)
    marker = json.loads((target / "imagine_tiny_model.json").read_text())
    assert marker["architecture"]["text_layers"] == TINY_ARCHITECTURE.text_layers
    assert [path.name for path in tmp_path.iterdir()] == ["tiny"]  # the outdated copy is gone
