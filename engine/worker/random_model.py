"""Full-size Stable Diffusion 1.5 and SDXL pipelines with random weights: real speed, no download.

Speed does not depend on the weights' values, so a pipeline with a real model's architecture and random weights
costs what the real one costs. `build_random_model(DIR, "sd15" | "sdxl")` writes a diffusers folder that
`engine.model` can point at and `engine/worker/model.py` loads through the same `from_pretrained` path as any
model. `width_divisor` > 1 gives a scaled-down variant: the same classes, block types, layer counts and
conditioning (SDXL's added time/text embedding, two text encoders), every width divided, for tests and CPU
benchmarks.

The configurations below are the published `config.json` values, written out because nothing can be downloaded
here (sources: the Hugging Face repositories `runwayml/stable-diffusion-v1-5` (unet, vae, scheduler) with
`openai/clip-vit-large-patch14` (its text encoder), and `stabilityai/stable-diffusion-xl-base-1.0` (unet, vae,
text_encoder = CLIP ViT-L/14, text_encoder_2 = OpenCLIP ViT-bigG/14, scheduler); default-valued keys omitted).

Weights are made quickly: every module is constructed on the meta device (no memory, no per-layer init), then
materialised empty in float16 and filled with one `normal_` per tensor (std 1/sqrt(fan_in), so activations keep
their scale through the network), norm scales 1, biases 0. Full-size SD 1.5 takes ~10 s of CPU to fill.

Tokenizers: no CLIP BPE vocabulary ships with the installed packages (open_clip, which has one, is not a
dependency), so the vocabulary is synthetic: CLIP's layout (256 byte symbols, the same with `</w>`, merges,
the two special tokens) with merges learned from a small prompt corpus and placeholder entries up to CLIP's
49,408 tokens, read by the real `CLIPTokenizer`. Speed depends only on the vocabulary's size (the embedding
table) and the fixed 77-token context, both as published.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.worker.tiny_model import (
    BOS,
    EOS,
    MAX_PROMPT_TOKENS,
    TOKENIZER_CORPUS,
    disable_library_progress_bars,
    learn_merges,
)

ARCHITECTURES = ("sd15", "sdxl")
MARKER_FILE = "imagine_random_model.json"
CLIP_VOCAB_SIZE = 49408
SYNTHETIC_MERGES = 2000
"""Merges learned from the corpus (it runs out before this); the rest of the vocabulary are placeholders."""

# ---- published configurations ---------------------------------------------------------------------------------

SD15_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD15_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

CLIP_VIT_L_TEXT: dict[str, Any] = {  # openai/clip-vit-large-patch14, text model (SD 1.5 and SDXL's text_encoder)
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": CLIP_VOCAB_SIZE,
}

OPENCLIP_BIGG_TEXT: dict[str, Any] = {  # SDXL's text_encoder_2: OpenCLIP ViT-bigG/14, with the projection
    **CLIP_VIT_L_TEXT,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}

SDXL_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,  # 1280 (pooled bigG text) + 6 time ids x 256
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}

SDXL_VAE: dict[str, Any] = {
    **SD15_VAE,
    "force_upcast": True,  # this VAE overflows in float16: diffusers decodes it in float32 unless told otherwise
    "sample_size": 1024,
    "scaling_factor": 0.13025,
}

SD15_SCHEDULER: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

SDXL_SCHEDULER: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}


@dataclass(frozen=True)
class BuildReport:
    folder: Path
    architecture: str
    width_divisor: int
    parameters: dict[str, int]
    """Parameter count per component (unet, vae, text_encoder, text_encoder_2)."""
    seconds: float
    bytes_on_disk: int


# ---- scaling ----------------------------------------------------------------------------------------------------


def _narrow(width: int, divisor: int, multiple: int) -> int:
    """`width / divisor`, rounded to a multiple of `multiple` (norm groups and heads must divide it), at least one."""
    return max(multiple, round(width / divisor / multiple) * multiple)


def scaled_unet(config: dict[str, Any], divisor: int, text_width: int, pooled_width: int = 0) -> dict[str, Any]:
    """The UNet at `1/divisor` width, its cross-attention (and SDXL's pooled text input) fitted to the encoders."""
    if divisor == 1:
        return dict(config)
    groups = 8
    channels = [_narrow(width, divisor, groups * 2) for width in config["block_out_channels"]]
    heads = config["attention_head_dim"]  # in these configs diffusers reads it as the number of heads
    heads = [max(1, h // divisor) for h in heads] if isinstance(heads, list) else max(1, heads // divisor)
    scaled = {**config, "block_out_channels": channels, "norm_num_groups": groups, "attention_head_dim": heads}
    scaled["cross_attention_dim"] = text_width
    if config.get("addition_embed_type") == "text_time":
        time_dim = _narrow(config["addition_time_embed_dim"], divisor, 8)
        scaled |= {
            "addition_time_embed_dim": time_dim,
            "projection_class_embeddings_input_dim": pooled_width + 6 * time_dim,
        }
    return scaled


def scaled_vae(config: dict[str, Any], divisor: int) -> dict[str, Any]:
    if divisor == 1:
        return dict(config)
    groups = 4
    channels = [_narrow(width, divisor, groups) for width in config["block_out_channels"]]
    return {**config, "block_out_channels": channels, "norm_num_groups": groups}


def scaled_text(config: dict[str, Any], divisor: int) -> dict[str, Any]:
    if divisor == 1:
        return dict(config)
    heads = max(1, config["num_attention_heads"] // divisor)
    hidden = _narrow(config["hidden_size"], divisor, 8 * heads)
    return {
        **config,
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_attention_heads": heads,
        "projection_dim": _narrow(config["projection_dim"], divisor, 8),
    }


# ---- building ---------------------------------------------------------------------------------------------------


def build_random_model(directory: Path, architecture: str, width_divisor: int = 1, seed: int = 0) -> BuildReport:
    """Write the pipeline to `directory` (which must not exist or be empty) and say what was built."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if width_divisor < 1:
        raise ValueError("the width divisor must be 1 (full size) or more")
    target = Path(directory).expanduser().resolve()
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder")
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        disable_library_progress_bars()
        generator = torch.Generator("cpu").manual_seed(seed)
        build = _build_sdxl if architecture == "sdxl" else _build_sd15
        parameters = build(staging, width_divisor, generator)
        marker = {"architecture": architecture, "width_divisor": width_divisor, "seed": seed, "parameters": parameters}
        (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            target.rmdir()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
    return BuildReport(target, architecture, width_divisor, parameters, time.perf_counter() - started, size)


def _build_sd15(folder: Path, divisor: int, generator: torch.Generator) -> dict[str, int]:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _clip_tokenizer(folder / "tokenizer", pad_token=EOS)
    text_config = scaled_text(CLIP_VIT_L_TEXT, divisor)
    unet_config = scaled_unet(SD15_UNET, divisor, text_config["hidden_size"])
    unet = _random(lambda: UNet2DConditionModel(**unet_config), generator)
    vae = _random(lambda: AutoencoderKL(**scaled_vae(SD15_VAE, divisor)), generator)
    text = _random(lambda: CLIPTextModel(CLIPTextConfig(**text_config)), generator)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _save(pipeline, folder)
    return {"unet": _count(unet), "vae": _count(vae), "text_encoder": _count(text)}


def _build_sdxl(folder: Path, divisor: int, generator: torch.Generator) -> dict[str, int]:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    first_config, second_config = scaled_text(CLIP_VIT_L_TEXT, divisor), scaled_text(OPENCLIP_BIGG_TEXT, divisor)
    # The UNet attends to both encoders' hidden states side by side (768 + 1280 = 2048) and takes the second's
    # pooled projection (1280) with the six size/crop conditioning numbers.
    text_width = first_config["hidden_size"] + second_config["hidden_size"]
    unet_config = scaled_unet(SDXL_UNET, divisor, text_width, second_config["projection_dim"])
    tokenizer = _clip_tokenizer(folder / "tokenizer", pad_token=EOS)
    tokenizer_2 = _clip_tokenizer(folder / "tokenizer_2", pad_token="!")  # as published: OpenCLIP pads with "!"
    unet = _random(lambda: UNet2DConditionModel(**unet_config), generator)
    vae = _random(lambda: AutoencoderKL(**scaled_vae(SDXL_VAE, divisor)), generator)
    text = _random(lambda: CLIPTextModel(CLIPTextConfig(**first_config)), generator)
    text_2 = _random(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**second_config)), generator)
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text,
        text_encoder_2=text_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        force_zeros_for_empty_prompt=True,
    )
    _save(pipeline, folder)
    counts = {"unet": _count(unet), "vae": _count(vae), "text_encoder": _count(text)}
    return counts | {"text_encoder_2": _count(text_2)}


def _save(pipeline: Any, folder: Path) -> None:
    pipeline.save_pretrained(folder, safe_serialization=True)


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _random(construct: Any, generator: torch.Generator) -> Any:
    """Construct on the meta device in float16 (nothing allocated, no init), then fill every tensor once."""
    with torch.device("meta"), _default_dtype(torch.float16):
        module = construct()
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            _fill(name, parameter, generator)
        for _, buffer in module.named_buffers():  # only non-persistent ones exist (position ids): not saved
            buffer.zero_()
    return module.eval()


def _fill(name: str, tensor: torch.Tensor, generator: torch.Generator) -> None:
    if tensor.ndim >= 2:  # linear, conv and embedding weights
        fan_in = tensor.numel() // tensor.shape[0]
        tensor.normal_(0.0, fan_in**-0.5, generator=generator)
    elif name.endswith("weight"):  # norm scales
        tensor.fill_(1.0)
    else:
        tensor.zero_()


@functools.cache
def _corpus_merges() -> list[tuple[str, str]]:
    return learn_merges(TOKENIZER_CORPUS, SYNTHETIC_MERGES)


def _clip_tokenizer(folder: Path, pad_token: str) -> Any:
    """A CLIPTokenizer with CLIP's vocabulary layout and size (see the module's docstring)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    merges = _corpus_merges()
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = list(dict.fromkeys(symbols + [s + "</w>" for s in symbols] + [left + right for left, right in merges]))
    placeholders = CLIP_VOCAB_SIZE - 2 - len(tokens)
    tokens += [f"<|unused{index}|>" for index in range(placeholders)]  # never produced: they only size the table
    vocab = {token: index for index, token in enumerate(tokens)}
    vocab[BOS], vocab[EOS] = len(vocab), len(vocab) + 1
    source = folder.with_name(folder.name + "-source")
    source.mkdir(parents=True)
    (source / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = "".join(f"{left} {right}\n" for left, right in merges)
    (source / "merges.txt").write_text("#version: 0.2\n" + merge_lines, encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(
        source, model_max_length=MAX_PROMPT_TOKENS, pad_token=pad_token, local_files_only=True
    )
    shutil.rmtree(source)
    return tokenizer
