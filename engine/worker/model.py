"""Finding and loading the diffusion pipeline: `engine.model` → a local folder → a pipeline on a device.

`engine.model` is `builtin:tiny` (the offline tiny model, built on first use under `engine.cache_dir`), a local
diffusers folder, or a Hugging Face Hub id (downloaded where the hub is reachable, else taken from the local hub
cache). Loading itself never touches the network: the pipeline is always read from a local folder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from config.settings import EngineSettings
from engine.errors import EngineError
from engine.worker.fast_paths import DTYPES, FastPaths, apply, resolve
from engine.worker.tiny_model import TINY_MODEL_NAME, build_tiny_model, disable_library_progress_bars, is_tiny_model

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

logger = logging.getLogger(__name__)

BUILTIN_TINY = "builtin:tiny"
TINY_MODEL_FOLDER = "tiny-sd-v1"
MODEL_SETTING = "engine.model (IMAGINE_ENGINE__MODEL)"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class ModelUnavailable(EngineError):
    """`engine.model` names nothing that can be loaded here; the message says what to set instead."""

    kind = "model_unavailable"


@dataclass(frozen=True)
class ModelInfo:
    """What the engine records about the model in each image's provenance metadata and in logs."""

    name: str
    path: str
    device: str
    dtype: str


@dataclass(frozen=True)
class LoadedModel:
    pipeline: DiffusionPipeline
    info: ModelInfo
    fast_paths: FastPaths


def model_name(spec: str) -> str:
    """A short, stable name for `engine.model`: the tiny model's name, a hub id, or a local folder's name."""
    spec = spec.strip()
    local = Path(spec).expanduser()
    if spec == BUILTIN_TINY or is_tiny_model(local):
        return TINY_MODEL_NAME
    if local.is_dir() or _looks_like_path(spec):
        return local.resolve().name
    return spec


def resolve_model(spec: str, cache_dir: str) -> str:
    """The local folder holding the pipeline that `spec` names, building or downloading it if needed."""
    spec = spec.strip()
    if spec == BUILTIN_TINY:
        return _tiny_model(Path(cache_dir).expanduser() / TINY_MODEL_FOLDER)
    if spec.startswith("builtin:"):
        raise ModelUnavailable(f"unknown built-in model {spec!r}: the only one is {BUILTIN_TINY}; set {MODEL_SETTING}")
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").is_file():
            raise ModelUnavailable(
                f"{spec} is a folder but not a diffusers pipeline (no model_index.json); set {MODEL_SETTING} "
                f"to {BUILTIN_TINY}, a saved pipeline folder or a hub id"
            )
        return str(local.resolve())
    if _looks_like_path(spec) or not HUB_ID.match(spec):
        raise ModelUnavailable(
            f"model folder {spec!r} does not exist; set {MODEL_SETTING} to {BUILTIN_TINY}, an existing "
            f"diffusers folder or a hub id"
        )
    return _fetch_from_hub(spec)


def _tiny_model(folder: Path) -> str:
    try:
        return str(build_tiny_model(folder))
    except OSError as exc:
        raise ModelUnavailable(
            f"cannot build the tiny model in {folder}: {exc.strerror or exc}; "
            f"set engine.cache_dir (IMAGINE_ENGINE__CACHE_DIR) to a writable folder"
        ) from exc


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1


def _fetch_from_hub(hub_id: str) -> str:
    """The hub id's snapshot folder: from the local hub cache if it is there, else downloaded."""
    from diffusers import DiffusionPipeline

    try:
        return str(DiffusionPipeline.download(hub_id, local_files_only=True))
    except Exception:  # not cached (or only partly): try the hub itself
        logger.info("model %s is not in the local hub cache; trying the Hugging Face Hub", hub_id)
    try:
        return str(DiffusionPipeline.download(hub_id))
    except Exception as exc:  # the hub library raises many types (and offline guards raise their own)
        raise ModelUnavailable(
            f"cannot get model {hub_id!r}: it is not a local folder, not in the local hub cache, and the "
            f"Hugging Face Hub could not be reached or refused it ({type(exc).__name__}). Set {MODEL_SETTING} "
            f"to {BUILTIN_TINY} or to a local diffusers folder"
        ) from exc


def choose_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """`auto` picks CUDA, then Apple MPS, then the CPU; explicit choices are checked.

    dtype `auto`: on CUDA bfloat16 where the GPU has it (the same tensor-core speed as float16 with float32's
    range, so SDXL's VAE needs no float32 upcast), else float16; float32 elsewhere.
    """
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable("engine.device is cuda but no CUDA GPU is available; set IMAGINE_ENGINE__DEVICE=auto")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ModelUnavailable("engine.device is mps but MPS is not available; set IMAGINE_ENGINE__DEVICE=auto")
    if dtype == "auto":
        dtype = "float32" if device != "cuda" else "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if dtype not in DTYPES:
        raise ModelUnavailable(f"engine.dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return torch.device(device), DTYPES[dtype]


def load_model(settings: EngineSettings) -> LoadedModel:
    """Resolve `engine.model`, load it onto the chosen device and tune it for generating a few large images."""
    from diffusers import DiffusionPipeline

    device, dtype = choose_device(settings.device, settings.dtype)
    disable_library_progress_bars()
    path = resolve_model(settings.model, settings.cache_dir)
    try:
        pipeline = DiffusionPipeline.from_pretrained(
            path,
            local_files_only=True,
            dtype=dtype,
            # Without accelerate diffusers falls back to a normal load anyway, but warns; ask for what runs.
            low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(f"cannot load the pipeline in {path}: {exc}; check {MODEL_SETTING}") from exc
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    fast_paths = resolve(settings, device, dtype, pipeline.vae.config)
    apply(pipeline, fast_paths)
    _tune_threads(device)
    info = ModelInfo(
        name=model_name(settings.model), path=path, device=str(device), dtype=str(dtype).removeprefix("torch.")
    )
    logger.info("loaded model %s from %s on %s (%s)", info.name, info.path, info.device, info.dtype)
    return LoadedModel(pipeline=pipeline, info=info, fast_paths=fast_paths)


def load_pipeline(settings: EngineSettings) -> DiffusionPipeline:
    return load_model(settings).pipeline


def _tune_threads(device: torch.device) -> None:
    if device.type == "cpu":
        threads = cpu_threads()
        torch.set_num_threads(threads)
        logger.info("CPU inference on %d thread(s)", threads)


def cpu_threads() -> int:
    """Threads for CPU inference: every core this process may use; OMP_NUM_THREADS, when set, wins.

    With OpenMP every operator ends in a barrier, so a thread that loses its core stalls the whole call: on a
    machine whose cores are busy with other work, set OMP_NUM_THREADS=1 (measured on 2 cores kept busy by other
    processes: 2 threads made a 4x1280² call 4x slower than 1; on the same cores idle, 2 threads took the call
    from 5.9 s to 3.5-4.6 s). Guessing from the load average misjudged our own previous runs as other work.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return _usable_cpus()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
