"""A tiny Stable-Diffusion-style pipeline with random weights, built offline: the model behind `builtin:tiny`.

Every part is a real diffusers/transformers class (UNet2DConditionModel, AutoencoderKL with 8x downsampling,
CLIPTextModel, CLIPTokenizer, DDIMScheduler), so the engine exercises the same code paths as with a
real checkpoint; only the weights are random. Images look like colour fields and noise: that is expected.

Weights are deterministic (a fixed seed per part): building twice gives identical tensors. The model is written
atomically: it is built in a temporary folder beside the target and renamed into place, so a crash leaves no
half model and two concurrent builders both end with the same complete one.

Sizing, for 4 images of 1280x1280 at 4 steps with classifier-free guidance on this project's 2-core CPU box
(shared with other work, so CPU seconds on 1 thread are the comparable figure; `bench/tiny_model.py --threads 1`):

    variant                                     UNet s   VAE s   call CPU s   vs spike
    spike: UNet (32,64,64), VAE (32,64,64,64)    40.2    139.2      87.1        1.00
    UNet (32,64,64), VAE (8,16,32,32)            26.3     16.1      28.8        0.33
    UNet (16,32,64,64), VAE (4,8,16,32)           5.3      5.1       9.6        0.11
    chosen: UNet (8,16,32,64), VAE (4,4,8,16)     2.2      2.8       5.3        0.06

A fourth UNet level puts cross-attention at 20x20 instead of 40x40; the VAE decoder's 1280x1280 level
dominates decoding, hence 4 channels there and no mid-block attention (25,600 tokens for one 1280x1280 image).
Fresh process (`bench/tiny_model.py --cold 3`): imports ~4 s, load ~3.5 s, call ~6.3 s of CPU on one thread.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import tempfile
import threading
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

TINY_MODEL_NAME = "imagine-tiny-sd-v1"
MARKER_FILE = "imagine_tiny_model.json"
"""Written last inside the model folder: its presence means a complete tiny model."""

WEIGHT_SEED = 1280
MAX_PROMPT_TOKENS = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_GLOBAL_RNG_LOCK = threading.Lock()


@dataclass(frozen=True)
class TinyArchitecture:
    """The sizes that decide how fast the tiny model runs. Cross-attention only at the lowest UNet level."""

    unet_channels: tuple[int, ...] = (8, 16, 32, 64)
    unet_layers_per_block: int = 1
    unet_norm_groups: int = 8
    vae_channels: tuple[int, int, int, int] = (4, 4, 8, 16)
    vae_layers_per_block: int = 1
    vae_norm_groups: int = 4
    text_hidden_size: int = 32
    text_layers: int = 2
    text_heads: int = 2
    vocab_merges: int = 700
    default_image_size: int = 1280


TINY_ARCHITECTURE = TinyArchitecture()

# Text the tokenizer's byte-level BPE learns its merges from: prompt-like English, so common words are one token.
TOKENIZER_CORPUS = (
    "a lighthouse at dawn, oil painting",
    "a cat sitting on a red chair, watercolor",
    "portrait of an old fisherman, 35mm photo, soft light",
    "a castle in the clouds, fantasy art, highly detailed",
    "a bowl of fruit on a wooden table, still life",
    "mountains at sunset with a lake in the foreground, landscape photography",
    "a city street at night in the rain, neon lights, cinematic",
    "an astronaut riding a horse on the moon, digital art",
    "a cozy cabin in a snowy forest, warm light from the windows",
    "a robot reading a book in a library, illustration",
    "a field of sunflowers under a blue sky, impressionist painting",
    "a dragon flying over the ocean, epic, dramatic clouds",
    "a cup of coffee and a croissant, morning, bokeh",
    "a small boat on a calm river, misty morning, pastel colors",
    "a fox in the autumn woods, orange leaves, wildlife photo",
    "an ancient temple in the jungle, ruins, sunlight through the trees",
    "a futuristic car in the desert, concept art, 4k",
    "a garden full of roses and butterflies, spring, vibrant",
    "the skyline of a big city seen from a bridge, black and white photo",
    "a child's drawing of a house with a tree and the sun",
    "a steaming bowl of ramen, food photography, close-up",
    "a whale swimming under the northern lights, surreal",
    "a knight standing in front of a burning village, dark fantasy",
    "a vintage poster of a train crossing the mountains",
    "a colorful parrot on a branch, tropical, sharp focus",
    "a quiet beach with palm trees and turquoise water, travel photo",
    "a medieval market square full of people, detailed, painting",
    "an owl perched on a lantern, moonlight, fairy tale",
    "a glass of red wine on a balcony overlooking the sea",
    "a pixel art scene of a village with a windmill and a river",
)


def build_tiny_model(directory: Path, architecture: TinyArchitecture = TINY_ARCHITECTURE) -> Path:
    """Write the tiny pipeline to `directory` (diffusers layout, safetensors) and return its path.

    A complete tiny model of this architecture already there is kept as it is (building is deterministic, so it is
    the same model). A tiny model of another architecture (an older version of this module) or an empty folder is
    replaced; anything else there is an error rather than something to overwrite.
    """
    target = Path(directory).expanduser().resolve()
    if _read_marker(target) == _marker(architecture):
        return target
    if not is_tiny_model(target):
        _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        _save_pipeline(staging, architecture)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("built the tiny model in %s", target)
    return target


def is_tiny_model(directory: Path) -> bool:
    return (Path(directory) / MARKER_FILE).is_file() and (Path(directory) / "model_index.json").is_file()


def _check_replaceable(target: Path) -> None:
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise FileExistsError(errno.EEXIST, "it exists and is not an empty folder or a tiny model", str(target))


def _move_into_place(staging: Path, target: Path) -> None:
    outdated = target.with_name(f".{target.name}.outdated-{uuid.uuid4().hex[:8]}")
    try:
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        elif is_tiny_model(target):
            target.rename(outdated)  # a model of an older architecture: set aside, removed once replaced
        staging.rename(target)  # atomic on one filesystem: readers see no model or a whole one
    except OSError:
        if not is_tiny_model(target):  # another builder finishing first is fine; anything else is not
            raise
    finally:
        shutil.rmtree(outdated, ignore_errors=True)


def _marker(architecture: TinyArchitecture) -> dict[str, Any]:
    """What the marker file of a model of this architecture says (through JSON, so tuples read back as lists)."""
    marker = {"name": TINY_MODEL_NAME, "weight_seed": WEIGHT_SEED, "architecture": asdict(architecture)}
    return json.loads(json.dumps(marker))


def _read_marker(directory: Path) -> dict[str, Any] | None:
    if not is_tiny_model(directory):
        return None
    try:
        return json.loads((directory / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _save_pipeline(folder: Path, architecture: TinyArchitecture) -> None:
    from diffusers import StableDiffusionPipeline

    tokenizer = _build_tokenizer(folder / "_tokenizer_source", architecture.vocab_merges)
    shutil.rmtree(folder / "_tokenizer_source")
    pipeline = StableDiffusionPipeline(
        vae=_seeded(_build_vae, architecture, seed=WEIGHT_SEED),
        text_encoder=_seeded(_build_text_encoder, architecture, len(tokenizer), tokenizer, seed=WEIGHT_SEED + 1),
        tokenizer=tokenizer,
        unet=_seeded(_build_unet, architecture, seed=WEIGHT_SEED + 2),
        scheduler=_build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    saved: Any = pipeline  # diffusers adds these methods through mixins that its type hints do not show
    saved.set_progress_bar_config(disable=True)
    disable_library_progress_bars()
    saved.save_pretrained(folder, safe_serialization=True)
    (folder / MARKER_FILE).write_text(json.dumps(_marker(architecture), indent=2) + "\n", encoding="utf-8")


def disable_library_progress_bars() -> None:
    """Loading and saving draw tqdm bars on stderr; a service's logs and a CLI's output are better without."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _seeded(build, *args, seed: int):  # type: ignore[no-untyped-def]
    """Run `build` with the global torch RNG at `seed` (module init draws from it), then restore the RNG.

    The lock keeps two builders in one process from drawing from the shared RNG in turn.
    """
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(*args)


def _build_unet(architecture: TinyArchitecture):  # type: ignore[no-untyped-def]
    from diffusers import UNet2DConditionModel

    levels = len(architecture.unet_channels)
    # Cross-attention costs grow with the square of the token count: keep it at the lowest resolution only.
    down = ("DownBlock2D",) * (levels - 1) + ("CrossAttnDownBlock2D",)
    up = ("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1)
    return UNet2DConditionModel(
        sample_size=architecture.default_image_size // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=architecture.unet_channels,
        layers_per_block=architecture.unet_layers_per_block,
        norm_num_groups=architecture.unet_norm_groups,
        cross_attention_dim=architecture.text_hidden_size,
        attention_head_dim=8,
    )


def _build_vae(architecture: TinyArchitecture):  # type: ignore[no-untyped-def]
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,  # four blocks: 8x downsampling, as in Stable Diffusion
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=architecture.vae_channels,
        layers_per_block=architecture.vae_layers_per_block,
        norm_num_groups=architecture.vae_norm_groups,
        latent_channels=4,
        sample_size=architecture.default_image_size,
        # Self-attention over a 160x160 latent is 25,600 tokens: far too slow for a model that is only a stand-in.
        mid_block_add_attention=False,
    )


def _build_text_encoder(architecture: TinyArchitecture, vocab_size: int, tokenizer):  # type: ignore[no-untyped-def]
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=architecture.text_hidden_size,
        intermediate_size=architecture.text_hidden_size * 2,
        num_hidden_layers=architecture.text_layers,
        num_attention_heads=architecture.text_heads,
        max_position_embeddings=MAX_PROMPT_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


def _build_scheduler():  # type: ignore[no-untyped-def]
    from diffusers import DDIMScheduler

    # Stable Diffusion's noise schedule; "trailing" spacing makes few-step sampling start from pure noise.
    # DDIM rather than Euler/DPM-Solver: with torch 2.13 and numpy 2 their set_timesteps emits a numpy
    # DeprecationWarning on every call (warnings are errors in the tests).
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        timestep_spacing="trailing",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    )


def _build_tokenizer(folder: Path, merges: int):  # type: ignore[no-untyped-def]
    """A CLIP tokenizer whose byte-level BPE merges are learned from the built-in corpus.

    The vocabulary is laid out like CLIP's: the 256 byte symbols, the same with the end-of-word suffix, one
    token per merge, then the two special tokens. Every byte has a token, so no text is ever unknown.
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    merge_pairs = learn_merges(TOKENIZER_CORPUS, merges)
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab_tokens = symbols + [s + "</w>" for s in symbols] + [left + right for left, right in merge_pairs]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    vocab[BOS], vocab[EOS] = len(vocab), len(vocab) + 1
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = "".join(f"{left} {right}\n" for left, right in merge_pairs)
    (folder / "merges.txt").write_text("#version: 0.2\n" + merge_lines, encoding="utf-8")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_PROMPT_TOKENS, local_files_only=True)


def learn_merges(corpus: tuple[str, ...], limit: int) -> list[tuple[str, str]]:
    """Byte-level BPE merges, most frequent pair first, ties broken by the pair itself.

    Learned here rather than with `tokenizers`' trainer because that one breaks ties by hash order, which
    changes from run to run; the model must come out the same every time. The words are split exactly as
    CLIPTokenizer splits them (its normaliser and pre-tokeniser), so the merges apply to what it sees.
    """
    from tokenizers import Regex, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    splitter = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"), behavior="removed", invert=True
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    word_counts = Counter(
        word for text in corpus for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text))
    )
    spellings = {word: [*word[:-1], word[-1] + "</w>"] for word in word_counts}
    merges: list[tuple[str, str]] = []
    while len(merges) < limit:
        pair_counts: Counter[tuple[str, str]] = Counter()
        for word, symbols in spellings.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pair_counts[pair] += word_counts[word]
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merges.append(best)
        spellings = {word: _merge_pair(symbols, best) for word, symbols in spellings.items()}
    return merges


def _merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    merged: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            merged.append(symbols[index] + symbols[index + 1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return merged
