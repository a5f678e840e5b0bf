"""Runs one batch of images through the diffusers pipeline. Called only from the engine's pipeline thread.

Every image gets its own initial noise from its own seed, built here rather than by the pipeline, so an image
is the same whether it is rendered alone or in a batch, and a variation can start from its parent's noise.
Stopping goes through `callback_on_step_end`: raising from it stops at once, without the VAE decode that the
pipeline's `_interrupt` flag would still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from engine.errors import EngineError
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
    guidance_scale: float | None = None
    """None: the runner's default."""


@dataclass(frozen=True)
class BatchShape:
    """Jobs can share a pipeline call only when these match."""

    width: int
    height: int
    steps: int
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
    def __init__(self, pipe: Any, model_name: str, guidance_scale: float) -> None:
        self.pipe = pipe
        self.model_name = model_name
        self.guidance_scale = guidance_scale

    def generate(self, tasks: Sequence[ImageTask], shape: BatchShape, on_step: StepCallback) -> list[Image.Image]:
        """Render `tasks` in one pipeline call; returns one PIL image per task, in order."""

        def step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            on_step(step + 1, shape.steps)
            return kwargs

        with torch.inference_mode():
            output = self.pipe(
                prompt=[task.prompt for task in tasks],
                negative_prompt=[task.negative_prompt for task in tasks],
                latents=self._initial_latents(tasks, shape),
                width=shape.width,
                height=shape.height,
                num_inference_steps=shape.steps,
                guidance_scale=self.guidance_scale if shape.guidance_scale is None else shape.guidance_scale,
                callback_on_step_end=step_end,
                output_type="pil",
            )
        return list(output.images)

    def _initial_latents(self, tasks: Sequence[ImageTask], shape: BatchShape) -> torch.Tensor:
        channels = self.pipe.unet.config.in_channels
        scale = self.pipe.vae_scale_factor
        latent_shape = (channels, shape.height // scale, shape.width // scale)
        noise = [_task_noise(task, latent_shape) for task in tasks]
        return torch.stack(noise).to(device=self.pipe.device, dtype=self.pipe.unet.dtype)


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
