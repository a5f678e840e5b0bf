"""The speed settings of a loaded pipeline (`engine.attention`, `engine.channels_last`, `engine.vae_*`,
`engine.compile_unet`, `engine.pad_batches`, `engine.pinned_transfer`): "auto" resolved per device kind, then
applied to the pipeline's modules. Each one can be switched on or off on its own; `bench/gpu.py` measures each
on and off in one run.

Why each "auto" is what it is, per device kind:
- CPU: measured with the scaled-down SDXL (widths / 10, 4 x 256², 4 steps; `bench/gpu.py`, two runs on the
  2 development cores while other work kept the load at 7-13, so single ratios are noisy, ±40%; speed-ups are
  off time / on time). VAE slicing on (1.09x and 1.14x, as the tiny model showed: 4x1280² decoded in 2.8 s
  sliced, 6.6 s whole); SDPA kept (0.61x and 1.09x: no consistent difference, and the eager path holds the
  whole attention matrix); channels_last off (1.01x, 0.68x); tiling off (0.84x, 1.15x; it saves memory, not
  time: an SD-like VAE with mid-block attention decoded 1280² in 21.7 s untiled, 40.7 s tiled);
  padding off (3 images padded to 4 is a third more work; 0.84x, 1.07x); compile off (2.8x faster calls once
  compiled, after 605 s of compiling); no pinning (nothing to transfer). float32 stays the CPU dtype although
  bfloat16 ran 1.5x and 3.0x faster on this AVX512-BF16 CPU: CPUs without it run bfloat16 far slower.
- CUDA: a reasoned choice until measured on a GPU (the prepared `bench/gpu_device.sh` measures it): SDPA
  (flash / memory-efficient kernels that never hold the whole attention matrix: at 1280² SDXL's first attention
  level has 6,400 tokens per image and the VAE's mid-block 25,600); channels_last (cuDNN's tensor-core
  convolutions are NHWC-native, and the UNet and VAE are mostly convolutions); VAE slicing on (one 1280² image
  is already 1.6 M pixels x 128 channels of parallel work, so decoding one at a time costs little, and it is the
  largest allocation of a call: estimated 2.3 instead of 9.4 GiB for 4 SDXL images in bfloat16,
  `bench/gpu_memory.py`); no tiling (it costs time and can leave seams); compile off (minutes at start-up and a
  recompile per batch and image shape); pinned uint8 transfer (a quarter of the bytes of diffusers' float copy,
  asynchronous).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from config.settings import EngineSettings

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class FastPaths:
    """Every speed choice for one loaded pipeline, resolved (no "auto" left)."""

    attention: str
    """sdpa (torch's scaled_dot_product_attention: diffusers' AttnProcessor2_0) or eager (AttnProcessor)."""
    channels_last: bool
    vae_dtype: torch.dtype
    vae_slicing: bool
    vae_tiling: bool
    compile_mode: str | None
    pad_batches: bool
    """Pad a batch to the next power of two images, so a compiled UNet (or CUDA graphs) sees few shapes."""
    pinned_transfer: bool

    def describe(self) -> dict[str, Any]:
        return {
            "attention": self.attention,
            "channels_last": self.channels_last,
            "vae_dtype": str(self.vae_dtype).removeprefix("torch."),
            "vae_slicing": self.vae_slicing,
            "vae_tiling": self.vae_tiling,
            "compile_unet": self.compile_mode or "off",
            "pad_batches": self.pad_batches,
            "pinned_transfer": self.pinned_transfer,
        }


# What "auto" means per device kind (see the module docstring for the measurements and reasons).
AUTO: dict[str, dict[str, Any]] = {
    "cpu": {"channels_last": False, "vae_slicing": True, "pinned_transfer": False},
    "cuda": {"channels_last": True, "vae_slicing": True, "pinned_transfer": True},
    "mps": {"channels_last": False, "vae_slicing": True, "pinned_transfer": False},
}


def resolve(settings: EngineSettings, device: torch.device, dtype: torch.dtype, vae_config: Any) -> FastPaths:
    """The fast paths for a pipeline in `dtype` on `device`, from the settings (`auto` per device kind)."""
    kind = AUTO.get(device.type, AUTO["cpu"])
    compile_mode = None if settings.compile_unet in ("auto", "off") else settings.compile_unet
    return FastPaths(
        attention="sdpa" if settings.attention == "auto" else settings.attention,
        channels_last=_switch(settings.channels_last, kind["channels_last"]),
        vae_dtype=vae_dtype(settings.vae_dtype, dtype, vae_config),
        vae_slicing=_switch(settings.vae_slicing, kind["vae_slicing"]),
        vae_tiling=_switch(settings.vae_tiling, False),
        compile_mode=compile_mode,
        pad_batches=_switch(settings.pad_batches, compile_mode is not None),
        pinned_transfer=_switch(settings.pinned_transfer, kind["pinned_transfer"]) and device.type == "cuda",
    )


def vae_dtype(setting: str, dtype: torch.dtype, vae_config: Any) -> torch.dtype:
    """`auto`: the pipeline's dtype, except float32 for a VAE that overflows in float16 (SDXL's: `force_upcast`)."""
    if setting != "auto":
        return DTYPES[setting]
    if dtype == torch.float16 and getattr(vae_config, "force_upcast", False):
        return torch.float32
    return dtype


def _switch(setting: str, automatic: bool) -> bool:
    return automatic if setting == "auto" else setting == "on"


def apply(pipeline: Any, paths: FastPaths) -> None:
    """Set the pipeline's modules up for `paths`, after the pipeline is on its device. Everything but compiling
    can be applied again with other paths."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    unet, vae = pipeline.unet, pipeline.vae
    processor = AttnProcessor2_0() if paths.attention == "sdpa" else AttnProcessor()
    for module in (unet, vae):
        module.set_attn_processor(processor)
    if vae.dtype != paths.vae_dtype:  # (diffusers logs a warning on every cast, even to the same dtype)
        vae.to(dtype=paths.vae_dtype)
    memory_format = torch.channels_last if paths.channels_last else torch.contiguous_format
    for module in (unet, vae):  # (reversible, so a benchmark can switch each path on and off in one process)
        module.to(memory_format=memory_format)
    vae.enable_slicing() if paths.vae_slicing else vae.disable_slicing()
    vae.enable_tiling() if paths.vae_tiling else vae.disable_tiling()
    if paths.compile_mode:
        unet.compile(mode=paths.compile_mode)  # in place: the pipeline keeps its module; compiles on first call
    log.info("fast paths: %s", paths.describe())


def batch_buckets(max_images: int) -> tuple[int, ...]:
    """Powers of two up to the largest batch: the only batch sizes a padded UNet sees."""
    sizes, size = [], 1
    while size < max_images:
        sizes.append(size)
        size *= 2
    return (*sizes, max_images)
