"""GPU memory a deployment needs, ESTIMATED without a GPU: weights from the real parameter counts, activations
by running the full-size UNet and VAE decoder on PyTorch's meta device (shapes only, nothing computed) while a
dispatch mode adds up the bytes of every tensor alive at once.

    .venv/bin/python bench/gpu_memory.py            # a table, then one JSON line

What it leaves out, so a real GPU needs more than this (measure with bench/gpu.py on one): the CUDA context
(~0.5 GiB), cuDNN/cuBLAS workspaces, the caching allocator's fragmentation (often 10-30%), and torch.compile's
or CUDA graphs' pools. Attention is counted as flash/memory-efficient SDPA does it (the output, never the
tokens x tokens matrix), which is what PyTorch picks on a recent GPU in float16/bfloat16.
"""

from __future__ import annotations

import json
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from engine.worker.random_model import (  # noqa: E402
    CLIP_VIT_L_TEXT,
    OPENCLIP_BIGG_TEXT,
    SD15_UNET,
    SD15_VAE,
    SDXL_UNET,
    SDXL_VAE,
)

GIB = 2**30


class PeakLiveBytes(TorchDispatchMode):
    """The most bytes held at once by tensors created inside the mode (weights made outside are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._owners: dict[int, int] = {}  # storage -> live tensors seen using it
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and id(tensor) not in self._seen:
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key not in self._owners:
            self._owners[key] = 0
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self._owners[key] += 1
        self._seen.add(id(tensor))
        weakref.finalize(tensor, self._release, key, storage.nbytes(), id(tensor))

    def _release(self, key: int, nbytes: int, tensor_id: int) -> None:
        self._seen.discard(tensor_id)
        self._owners[key] -= 1
        if not self._owners[key]:
            del self._owners[key]
            self.live -= nbytes


def _flash_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    """What flash attention allocates: the output (and a small log-sum-exp), never the attention matrix."""
    return query.new_empty(*query.shape[:-1], value.shape[-1])


def peak_activation_bytes(run: Callable[[], Any]) -> int:
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _flash_attention
    try:
        with torch.inference_mode(), PeakLiveBytes() as counter:
            run()
    finally:
        F.scaled_dot_product_attention = original
    return counter.peak


def unet_peak(config: dict[str, Any], batch: int, size: int, dtype: torch.dtype, sdxl: bool) -> int:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config).to(dtype)
    latent = size // 8
    extra: dict[str, Any] = {}
    if sdxl:
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.empty(batch, 1280, device="meta", dtype=dtype),
            "time_ids": torch.empty(batch, 6, device="meta", dtype=dtype),
        }
    sample = torch.empty(batch, 4, latent, latent, device="meta", dtype=dtype)
    text = torch.empty(batch, 77, config["cross_attention_dim"], device="meta", dtype=dtype)
    timestep = torch.tensor(999, device="meta")
    return peak_activation_bytes(lambda: unet(sample, timestep, encoder_hidden_states=text, **extra))


def vae_decode_peak(config: dict[str, Any], batch: int, size: int, dtype: torch.dtype) -> int:
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**config).to(dtype)
    latent = torch.empty(batch, 4, size // 8, size // 8, device="meta", dtype=dtype)
    return peak_activation_bytes(lambda: vae.decode(latent))


def parameter_count(construct: Callable[[], torch.nn.Module]) -> int:
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in construct().parameters())


def main() -> None:
    import diffusers.utils.logging
    from diffusers import AutoencoderKL, UNet2DConditionModel

    diffusers.utils.logging.set_verbosity_error()  # casting a meta model logs a float32-modules warning each time
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    text_l = parameter_count(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_VIT_L_TEXT)))
    text_g = parameter_count(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**OPENCLIP_BIGG_TEXT)))
    vae_parameters = parameter_count(lambda: AutoencoderKL(**SD15_VAE))
    sd15_unet = parameter_count(lambda: UNet2DConditionModel(**SD15_UNET))
    sdxl_unet = parameter_count(lambda: UNet2DConditionModel(**SDXL_UNET))
    models = {
        "sd15": (SD15_UNET, SD15_VAE, sd15_unet, text_l, False),
        "sdxl": (SDXL_UNET, SDXL_VAE, sdxl_unet, text_l + text_g, True),
    }
    rows = []
    for name, (unet_config, vae_config, unet_parameters, text_parameters, sdxl) in models.items():
        for size in (1024, 1280):
            # bfloat16 everywhere; float16 with the VAE in float32 (SDXL's VAE overflows in float16)
            for label, dtype, vae_dtype in (
                ("bf16", torch.bfloat16, torch.bfloat16),
                ("fp16+fp32 VAE" if sdxl else "fp16", torch.float16, torch.float32 if sdxl else torch.float16),
            ):
                weights = (unet_parameters + text_parameters) * 2 + vae_parameters * vae_dtype.itemsize
                vae_one = vae_decode_peak(vae_config, 1, size, vae_dtype)
                for images in (1, 4, 8, 16):
                    unet_activations = unet_peak(unet_config, 2 * images, size, dtype, sdxl)  # x2: CFG
                    vae_all = vae_decode_peak(vae_config, images, size, vae_dtype) if images <= 8 else None
                    rows.append(
                        {
                            "model": name,
                            "size": size,
                            "dtype": label,
                            "images": images,
                            "weights_gib": round(weights / GIB, 2),
                            "unet_activations_gib": round(unet_activations / GIB, 2),
                            "vae_decode_all_gib": None if vae_all is None else round(vae_all / GIB, 2),
                            "vae_decode_sliced_gib": round(vae_one / GIB, 2),
                            "total_sliced_gib": round((weights + max(unet_activations, vae_one)) / GIB, 1),
                            "total_unsliced_gib": None
                            if vae_all is None
                            else round((weights + max(unet_activations, vae_all)) / GIB, 1),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"estimated": True, "rows": rows}))


if __name__ == "__main__":
    main()
