"""Real-size architectures with random weights (`imagine model build-random`) and the engine's fast paths.

The full-size configurations are checked against the published parameter counts on the meta device (nothing
allocated); the scaled-down variants are built through the CLI and generate through the engine on the CPU.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from PIL import Image
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from bots.cli import main as cli_main
from config.settings import EngineSettings
from engine.local import LocalJobQueue
from engine.requests import GenerationRequest, Requester
from engine.worker.fast_paths import batch_buckets, resolve, vae_dtype
from engine.worker.model import load_model
from engine.worker.random_model import (
    CLIP_VIT_L_TEXT,
    OPENCLIP_BIGG_TEXT,
    SD15_UNET,
    SD15_VAE,
    SDXL_UNET,
    SDXL_VAE,
)
from engine.worker.runner import BatchShape, ImageTask, PipelineRunner
from tests.support import make_settings

# Euler's set_timesteps trips a numpy 2 DeprecationWarning inside diffusers (SDXL's published scheduler).
EULER_NUMPY_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
ANN = Requester(platform="test", user_id="ann")


@pytest.fixture(scope="module")
def random_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both architectures at tiny scale, built once through the command line."""
    root = tmp_path_factory.mktemp("random")
    for arch in ("sd15", "sdxl"):
        assert cli_main(["model", "build-random", "--arch", arch, "--scale", "tiny", str(root / arch)]) == 0
    return {arch: root / arch for arch in ("sd15", "sdxl")}


def _meta_parameters(construct) -> int:  # type: ignore[no-untyped-def]
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in construct().parameters())


def test_full_size_configurations_have_the_published_parameter_counts() -> None:
    # Published sizes: SD 1.5 UNet 859.52M, SDXL UNet 2.567B, the VAE 83.65M, CLIP ViT-L/14 text 123.06M,
    # OpenCLIP ViT-bigG/14 text with projection 694.66M.
    assert _meta_parameters(lambda: UNet2DConditionModel(**SD15_UNET)) == 859_520_964
    assert _meta_parameters(lambda: UNet2DConditionModel(**SDXL_UNET)) == 2_567_463_684
    assert _meta_parameters(lambda: AutoencoderKL(**SD15_VAE)) == 83_653_863
    assert _meta_parameters(lambda: AutoencoderKL(**SDXL_VAE)) == 83_653_863
    assert _meta_parameters(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT))) == 123_060_480
    bigg = _meta_parameters(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**OPENCLIP_BIGG_TEXT)))
    assert bigg == 694_659_840


def test_scaled_down_models_keep_the_architecture(random_models: dict[str, Path]) -> None:
    sdxl = random_models["sdxl"]
    index = json.loads((sdxl / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["scheduler"] == ["diffusers", "EulerDiscreteScheduler"]
    unet = json.loads((sdxl / "unet/config.json").read_text())
    for key in ("down_block_types", "up_block_types", "transformer_layers_per_block", "addition_embed_type"):
        assert unet[key] == SDXL_UNET[key]
    assert unet["block_out_channels"] == [32, 64, 128]
    text = json.loads((sdxl / "text_encoder/config.json").read_text())
    text_2 = json.loads((sdxl / "text_encoder_2/config.json").read_text())
    assert unet["cross_attention_dim"] == text["hidden_size"] + text_2["hidden_size"]
    assert text_2["num_hidden_layers"] == 32
    assert json.loads((sdxl / "vae/config.json").read_text())["force_upcast"] is True
    sd15 = json.loads((random_models["sd15"] / "model_index.json").read_text())
    assert sd15["scheduler"] == ["diffusers", "PNDMScheduler"]
    for folder in random_models.values():  # float16 safetensors only, CLIP's vocabulary size
        weights = list(folder.glob("**/*.safetensors"))
        assert weights and not list(folder.glob("**/*.bin"))
        for path in weights:
            with safe_open(path, "pt") as tensors:
                assert {tensors.get_slice(key).get_dtype() for key in tensors.keys()} == {"F16"}
        assert len(CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)) == 49408


def test_build_random_refuses_an_occupied_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    assert cli_main(["model", "build-random", "--arch", "sd15", "--scale", "tiny", str(occupied)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [path.name for path in occupied.iterdir()] == ["notes.txt"]


@pytest.mark.filterwarnings(EULER_NUMPY_WARNING)
@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
async def test_the_engine_generates_with_each_architecture(
    arch: str, random_models: dict[str, Path], tmp_path: Path
) -> None:
    engine = LocalJobQueue(make_settings(tmp_path, random_models[arch], steps=1))
    await engine.start()
    try:
        job = await engine.submit(GenerationRequest(prompt="a lighthouse", requester=ANN, size=(64, 64), seed=3))
        result = await job.result()
    finally:
        await engine.shutdown()
    assert len(result.images) == 4
    for image in result.images:
        with Image.open(image.path) as picture:
            assert picture.size == (64, 64)
            assert np.asarray(picture).std() > 0  # a picture, not a blank


def test_fast_path_auto_choices_per_device_kind() -> None:
    auto = EngineSettings()
    cpu = resolve(auto, torch.device("cpu"), torch.float32, None)
    assert (cpu.attention, cpu.channels_last, cpu.vae_slicing, cpu.pinned_transfer) == ("sdpa", False, True, False)
    cuda = resolve(auto, torch.device("cuda"), torch.bfloat16, None)
    assert (cuda.channels_last, cuda.vae_slicing, cuda.pinned_transfer, cuda.compile_mode) == (True, True, True, None)
    assert not cuda.pad_batches
    compiled = resolve(replace(auto, compile_unet="default"), torch.device("cuda"), torch.bfloat16, None)
    assert compiled.pad_batches  # fixed shapes are what make compiling pay
    overflowing = type("VaeConfig", (), {"force_upcast": True})()
    assert vae_dtype("auto", torch.float16, overflowing) == torch.float32
    assert vae_dtype("auto", torch.bfloat16, overflowing) == torch.bfloat16
    assert vae_dtype("float16", torch.float16, overflowing) == torch.float16
    assert batch_buckets(8) == (1, 2, 4, 8) and batch_buckets(6) == (1, 2, 4, 6)


@pytest.fixture(scope="module")
def sd15_runners(random_models: dict[str, Path]) -> tuple[PipelineRunner, PipelineRunner]:
    """The tiny SD 1.5 loaded twice: every fast path that runs on a CPU off, and on."""
    off = EngineSettings(model=str(random_models["sd15"]), device="cpu", attention="eager", vae_slicing="off")
    on = replace(off, attention="sdpa", channels_last="on", vae_slicing="on", vae_tiling="off")
    plain, fast = load_model(off), load_model(on)
    assert isinstance(next(iter(plain.pipeline.unet.attn_processors.values())), AttnProcessor)
    assert isinstance(next(iter(fast.pipeline.unet.attn_processors.values())), AttnProcessor2_0)
    assert fast.pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    return PipelineRunner(plain.pipeline, "sd15", 5.0), PipelineRunner(fast.pipeline, "sd15", 5.0, buckets=(4,))


def test_fast_paths_and_padding_leave_the_pictures_as_they_were(
    sd15_runners: tuple[PipelineRunner, PipelineRunner],
) -> None:
    plain, fast = sd15_runners
    tasks = [ImageTask("job", index, 40 + index, "a red boat", "") for index in range(3)]  # padded to 4
    shape = BatchShape(64, 64, 2)
    unit_calls: list[int] = []
    original = fast.pipe.unet.forward

    def counting_forward(sample: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        unit_calls.append(sample.shape[0])
        return original(sample, *args, **kwargs)

    fast.pipe.unet.forward = counting_forward
    try:
        fast_images = fast.generate(tasks, shape, lambda step, total: None)
    finally:
        del fast.pipe.unet.forward
    plain_images = plain.generate(tasks, shape, lambda step, total: None)
    assert unit_calls and set(unit_calls) == {8}  # 4 images (3 + 1 padding) x 2 for classifier-free guidance
    assert len(fast_images) == 3
    for left, right in zip(plain_images, fast_images, strict=True):
        difference = np.abs(np.asarray(left, dtype=np.int16) - np.asarray(right, dtype=np.int16))
        assert difference.max() <= 2  # rounding only: same seeds, same pictures
