"""Runs one batch of images through the diffusers pipeline. Called only from the engine's pipeline thread.

Every image gets its own initial noise from its own seed, built here rather than by the pipeline, so an image
is the same whether it is rendered alone or in a batch, and a variation can start from its parent's noise.
Stopping goes through `callback_on_step_end`: raising from it stops at once, without the VAE decode that the
pipeline's `_interrupt` flag would still run.

The pipeline stops at the latents; decoding is done here, so the VAE runs in its own dtype (float32 for SDXL's
in float16), the pixels become uint8 on the device (a quarter of the bytes to copy) and reach the host through
pinned memory when `pinned_transfer` is on. A batch may be padded to a fixed size (`buckets`) so a compiled
UNet sees few shapes; the padding images are dropped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from engine import messages
from engine.errors import EngineError, GenerationFailed
from engine.input_images import open_input_image
from engine.requests import Variation

log = logging.getLogger(__name__)


class StopBatch(EngineError):
    """Raised from the step callback when no job in the batch still wants its images."""


@dataclass(frozen=True)
class ImageTask:
    """One image to render: which job and slot it belongs to, and everything that determines its pixels."""

    job_id: str
    index: int
    seed: int
    prompt: str
    negative_prompt: str
    variation: Variation | None = None
    input_image: str | None = None
    """An image prompt's stored input image (engine/input_images.py): the call is image-to-image."""
    guidance_scale: float | None = None
    """None: the runner's default."""


@dataclass(frozen=True)
class BatchShape:
    """Jobs can share a pipeline call only when these match."""

    width: int
    height: int
    steps: int
    strength: float | None = None
    """Image prompts: how much of the input to redraw (one per call). None: text-to-image."""
    guidance_scale: float | None = None
    """One value per pipeline call (diffusers takes a scalar); None: the runner's default."""


StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (step, total_steps); may raise StopBatch."""


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class PipelineRunner:
    def __init__(
        self,
        pipe: Any,
        model_name: str,
        guidance_scale: float,
        buckets: Sequence[int] = (),
        pinned_transfer: bool = False,
    ) -> None:
        self.pipe = pipe
        self.model_name = model_name
        self.guidance_scale = guidance_scale
        self.buckets = tuple(sorted(buckets))
        """Batch sizes to pad to (empty: none)."""
        self.pinned_transfer = pinned_transfer
        self._image_pipe: Any = None

    @property
    def image_pipe(self) -> Any:
        """The image-to-image pipeline, made on first use from the loaded pipeline's own components (the same
        UNet, VAE and text encoder objects): no second copy of the model in memory."""
        if self._image_pipe is None:
            from diffusers import AutoPipelineForImage2Image

            self._image_pipe = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._image_pipe.set_progress_bar_config(disable=True)
        return self._image_pipe

    def _guidance(self, shape: BatchShape) -> float:
        return self.guidance_scale if shape.guidance_scale is None else shape.guidance_scale

    def generate(self, tasks: Sequence[ImageTask], shape: BatchShape, on_step: StepCallback) -> list[Image.Image]:
        """Render `tasks` in one pipeline call; returns one PIL image per task, in order."""
        if shape.strength is not None:
            return self._generate_from_images(tasks, shape, on_step)

        def step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(step + 1, shape.steps)
            return kwargs

        padded = self._padded(tasks)
        with torch.inference_mode():
            output = self.pipe(
                prompt=[task.prompt for task in padded],
                negative_prompt=[task.negative_prompt for task in padded],
                latents=self._initial_latents(padded, shape),
                width=shape.width,
                height=shape.height,
                num_inference_steps=shape.steps,
                guidance_scale=self._guidance(shape),
                callback_on_step_end=step_end,
                output_type="latent",
            )
            images = self.decode(output.images[: len(tasks)])
        return images

    def _generate_from_images(
        self, tasks: Sequence[ImageTask], shape: BatchShape, on_step: StepCallback
    ) -> list[Image.Image]:
        """Image prompts: each input image, noised by `strength` with its own seed's generator, then denoised for
        the last `strength` part of the schedule (diffusers runs int(steps × strength) steps)."""
        strength = shape.strength or 1.0
        steps = steps_for_strength(shape.steps, strength)
        pictures = [_input_picture(task, shape) for task in tasks]
        pipe = self.image_pipe

        def step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(step + 1, int(getattr(pipe, "num_timesteps", 0) or steps))
            return kwargs

        with torch.inference_mode():
            output = pipe(
                prompt=[task.prompt for task in tasks],
                negative_prompt=[task.negative_prompt for task in tasks],
                image=pictures,
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=self._guidance(shape),
                # One generator per image: an image is the same alone or in a batch.
                generator=[torch.Generator("cpu").manual_seed(task.seed) for task in tasks],
                callback_on_step_end=step_end,
                output_type="latent",
            )
            images = self.decode(output.images)
        return images

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Latents to pictures, as the pipeline's own decode and post-processing do (same rounding)."""
        vae = self.pipe.vae
        latents = latents.to(vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None) is not None:
            latents = latents + vae.config.shift_factor
        decoded = vae.decode(latents, return_dict=False)[0]
        pixels = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        host = self._to_host(pixels.permute(0, 2, 3, 1).contiguous())
        return [Image.fromarray(array) for array in host.numpy()]

    def _to_host(self, pixels: torch.Tensor) -> torch.Tensor:
        if not (self.pinned_transfer and pixels.is_cuda):
            return pixels.cpu()
        # A fresh pinned buffer per call: a reused one could be overwritten by the next batch's decode while
        # post-processing still reads pictures made from this one.
        host = torch.empty(pixels.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(pixels, non_blocking=True)
        torch.cuda.current_stream(pixels.device).synchronize()
        return host

    def _padded(self, tasks: Sequence[ImageTask]) -> Sequence[ImageTask]:
        """`tasks` and copies of the last one up to the next bucket size (none when no bucket is larger)."""
        size = next((bucket for bucket in self.buckets if bucket >= len(tasks)), len(tasks))
        return [*tasks, *([tasks[-1]] * (size - len(tasks)))]

    def _initial_latents(self, tasks: Sequence[ImageTask], shape: BatchShape) -> torch.Tensor:
        channels = self.pipe.unet.config.in_channels
        scale = self.pipe.vae_scale_factor
        latent_shape = (channels, shape.height // scale, shape.width // scale)
        noise = [_task_noise(task, latent_shape) for task in tasks]
        return torch.stack(noise).to(device=self.pipe.device, dtype=self.pipe.unet.dtype)


def steps_for_strength(steps: int, strength: float) -> int:
    """Schedule length for an image prompt: `steps`, raised just enough that int(steps × strength) is at least one
    denoising step (diffusers refuses zero)."""
    scheduled = max(steps, math.ceil(1 / strength))
    while int(scheduled * strength) < 1:  # floating point: 1 / strength may round down
        scheduled += 1
    return scheduled


def _input_picture(task: ImageTask, shape: BatchShape) -> Image.Image:
    """The task's stored input image at the batch's size. Its file went missing (or was tampered with): the job
    fails with a message that names no path."""
    if task.input_image is None:
        raise GenerationFailed(messages.INPUT_IMAGE_GONE)
    try:
        return open_input_image(task.input_image, (shape.width, shape.height))
    except OSError:
        log.error("input image of job %s is unreadable: %s", task.job_id, task.input_image)
        raise GenerationFailed(messages.INPUT_IMAGE_GONE) from None


def seeded_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def _task_noise(task: ImageTask, shape: tuple[int, ...]) -> torch.Tensor:
    fresh = seeded_noise(task.seed, shape)
    if task.variation is None:
        return fresh
    parent = seeded_noise(task.variation.parent_seed, shape)
    return slerp(parent, fresh, task.variation.strength)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation keeps the result distributed like Gaussian noise (a plain mix would shrink it)."""
    a_flat, b_flat = a.flatten(), b.flatten()
    cos = torch.clamp(torch.dot(a_flat, b_flat) / (a_flat.norm() * b_flat.norm()), -1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return (1 - t) * a + t * b
    sin = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / sin) * a + (torch.sin(t * omega) / sin) * b
