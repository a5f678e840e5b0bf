"""Moderation benchmark: prompt verdict latency, image screening time, rate-limiter throughput.

    .venv/bin/python bench/moderation.py                 # the labelled set × 3 rounds, 20 images at 1280²
    .venv/bin/python bench/moderation.py --rounds 1 --images 5    # a quick look
    .venv/bin/python bench/moderation.py --torch-threads 1       # the PyTorch baseline on one intra-op thread

Prompt latency is one `PromptModerator.moderate()` call per prompt, as admission makes it (the prompts are the
labelled set's), with the embedding layer on ONNX Runtime (the configured default; the first run on a machine
makes the export under engine.cache_dir) and, as baselines measured in the same process and alternating
rounds, the embedding on PyTorch (the runtime before the export existed) and words only; the CPU time per
verdict (all threads) is less sensitive to other processes than the latency is. Image screening is NudeNet
on 1280×1280 images, against encoding the same image as a JPEG (a cost the engine pays anyway). Limiter
throughput is `InMemoryRateLimiter` decisions per second, direct and through `await`. The machine is shared
and noisy: compare ratios, not absolute times; the load average is printed with the results. On a crowded
CPU, OpenMP threads that spin while they wait for each other (the default) make the PyTorch baseline many
times slower; run with OMP_WAIT_POLICY=PASSIVE in the environment (it must be set before torch loads), or try
`--torch-threads 1`, to see the difference (ONNX Runtime's threads are told not to spin).

Issue 13 (other languages): the prompts are the English labelled set and the multilingual one
(tests/data/moderation_prompts_i18n.jsonl, twelve languages). The verdict as configured now runs the English model
for English prompts and the multilingual model (USE-m3, moderation/multilingual.py) for the others; "today's
verdict" is the same moderator without the multilingual model (the English model reads every prompt, as before
this change), timed in the same rounds, so the cost of the new model is their ratio, per language too. The memory
the multilingual model adds is the process's resident size before and after loading it.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.settings import LimitSettings, ModerationSettings, load_settings  # noqa: E402
from moderation.images import NudityScreener, withheld_version  # noqa: E402
from moderation.limits import InMemoryRateLimiter  # noqa: E402
from moderation.multilingual import MultilingualScorer  # noqa: E402
from moderation.policy import ModerationPolicy  # noqa: E402
from moderation.prompts import PromptModerator  # noqa: E402
from moderation.semantic import SemanticScorer  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
LABELLED_SETS = (DATA / "moderation_prompts.jsonl", DATA / "moderation_prompts_i18n.jsonl")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def time_each(function: Callable[[object], object], items: list) -> list[float]:
    """Milliseconds per call."""
    samples = []
    for item in items:
        started = time.perf_counter()
        function(item)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def load_scorer(policy: ModerationPolicy, runtime: str) -> tuple[SemanticScorer, float]:
    """A loaded scorer and the seconds it took (for ONNX, the first run on a machine includes the export)."""
    scorer = SemanticScorer(policy.semantic, runtime=runtime, cache_dir=load_settings().engine.cache_dir)
    started = time.perf_counter()
    scorer.load()
    return scorer, time.perf_counter() - started


def resident_mb() -> float:
    """This process's resident memory (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def labelled_prompts() -> list[tuple[str, str]]:
    """(language, prompt) of every labelled prompt; the English set's rows have no language: English."""
    lines = [line for path in LABELLED_SETS for line in path.read_text(encoding="utf-8").splitlines() if line]
    rows = [json.loads(line) for line in lines]
    return [(row.get("language", "en"), row["prompt"]) for row in rows]


def load_multilingual(policy: ModerationPolicy) -> tuple[MultilingualScorer, float, float]:
    scorer = MultilingualScorer(policy.semantic)
    before, started = resident_mb(), time.perf_counter()
    scorer.load()
    return scorer, time.perf_counter() - started, resident_mb() - before


def prompt_latency(rounds: int) -> dict[str, object]:
    rows = labelled_prompts()
    prompts = [prompt for _, prompt in rows]
    policy = ModerationPolicy.load()
    onnx_scorer, load_s = load_scorer(policy, "onnx")
    multilingual, multilingual_load_s, multilingual_mb = load_multilingual(policy)
    torch_scorer, torch_load_s = load_scorer(policy, "torch")
    if onnx_scorer.runtime != "onnx":
        raise SystemExit("the ONNX encoder could not be opened (see the warning above); nothing to compare")
    moderators = {
        "new": PromptModerator(policy, semantic=onnx_scorer, multilingual=multilingual),
        "today": PromptModerator(policy, semantic=onnx_scorer),
        "torch": PromptModerator(policy, semantic=torch_scorer),
        "words": PromptModerator(policy),
    }
    samples: dict[str, list[float]] = {name: [] for name in moderators}
    cpu_s = 0.0
    for moderator in moderators.values():
        moderator.moderate("warm up")
        moderator.moderate("calentamiento")
    for _ in range(rounds):  # alternate, so that load from other processes hits all alike
        cpu_started = time.process_time()
        samples["new"] += time_each(moderators["new"].moderate, prompts)
        cpu_s += time.process_time() - cpu_started
        for name in ("today", "torch", "words"):
            samples[name] += time_each(moderators[name].moderate, prompts)
    started = time.perf_counter()
    moderators["new"].moderate_many(prompts * rounds)
    batch_per_s = len(prompts) * rounds / (time.perf_counter() - started)
    languages = [language for language, _ in rows] * rounds
    return {
        "prompts": len(prompts) * rounds,
        "model_load_s": load_s,
        "torch_model_load_s": torch_load_s,
        "multilingual_load_s": multilingual_load_s,
        "multilingual_mb": multilingual_mb,
        "p50_ms": statistics.median(samples["new"]),
        "p99_ms": percentile(samples["new"], 0.99),
        "cpu_ms": cpu_s * 1000 / len(samples["new"]),
        "today_p50_ms": statistics.median(samples["today"]),
        "today_p99_ms": percentile(samples["today"], 0.99),
        "torch_p50_ms": statistics.median(samples["torch"]),
        "torch_p99_ms": percentile(samples["torch"], 0.99),
        "words_only_p50_ms": statistics.median(samples["words"]),
        "words_only_p99_ms": percentile(samples["words"], 0.99),
        "batched_prompts_per_s": batch_per_s,
        "by_language": by_language(languages, samples["new"], samples["today"]),
    }


def by_language(languages: list[str], new: list[float], today: list[float]) -> dict[str, dict[str, float]]:
    """p50/p99 per language of the verdict now, and its ratio to today's verdict on the same prompts."""
    table = {}
    for language in dict.fromkeys(languages):
        mine = [ms for lang, ms in zip(languages, new, strict=True) if lang == language]
        base = [ms for lang, ms in zip(languages, today, strict=True) if lang == language]
        table[language] = {
            "verdicts": len(mine),
            "p50_ms": statistics.median(mine),
            "p99_ms": percentile(mine, 0.99),
            "p50_ratio": statistics.median(mine) / statistics.median(base),
            "p99_ratio": percentile(mine, 0.99) / percentile(base, 0.99),
        }
    return table


def synthetic_images(count: int, size: int = 1280) -> list[Image.Image]:
    """Noise 'photos' and a drawn figure, alternating (screening time hardly depends on content)."""
    rng = np.random.default_rng(0)
    images = []
    for index in range(count):
        if index % 2:
            figure = Image.new("RGB", (size, size), (90, 110, 140))
            draw = ImageDraw.Draw(figure)
            draw.ellipse((size * 0.3, size * 0.3, size * 0.7, size * 0.9), fill=(224, 172, 140))
            images.append(figure.filter(ImageFilter.GaussianBlur(6)))
        else:
            noise = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
            images.append(Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC))
    return images


def image_screening(count: int) -> dict[str, float]:
    screener = NudityScreener.from_settings(ModerationSettings())
    started = time.perf_counter()
    screener.load()
    load_s = time.perf_counter() - started
    images = synthetic_images(count)
    screener(images[0])  # warm up

    def encode(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    screen_ms, jpeg_ms = [], []
    for image in images:
        screen_ms += time_each(screener, [image])
        jpeg_ms += time_each(encode, [image])
    withheld_ms = time_each(lambda image: withheld_version(image, "blur"), images[:5])
    return {
        "images": count,
        "model_load_s": load_s,
        "screen_ms": statistics.median(screen_ms),
        "jpeg_ms": statistics.median(jpeg_ms),
        "withheld_blur_ms": statistics.median(withheld_ms),
    }


def limiter_throughput(decisions: int) -> dict[str, float]:
    limiter = InMemoryRateLimiter(LimitSettings())
    users = [f"discord:{n}" for n in range(10_000)]  # many users, most admitted: the realistic case
    started = time.perf_counter()
    for index in range(decisions):
        limiter.acquire_now(users[index % len(users)], "discord:guild-1")
    direct = decisions / (time.perf_counter() - started)

    async def through_await() -> float:
        limiter = InMemoryRateLimiter(LimitSettings())
        started = time.perf_counter()
        for index in range(decisions):
            await limiter.acquire(users[index % len(users)], "discord:guild-1")
        return decisions / (time.perf_counter() - started)

    return {"decisions": decisions, "direct_per_s": direct, "async_per_s": asyncio.run(through_await())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the labelled set")
    parser.add_argument("--images", type=int, default=20, help="1280×1280 images to screen")
    parser.add_argument("--decisions", type=int, default=200_000, help="rate-limiter decisions")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    prompts = prompt_latency(args.rounds)
    images = image_screening(args.images)
    limits = limiter_throughput(args.decisions)
    rows = [
        ("prompt verdict p50 (English model + multilingual model)", f"{prompts['p50_ms']:.2f} ms"),
        ("prompt verdict p99 (English model + multilingual model)", f"{prompts['p99_ms']:.2f} ms"),
        ("CPU time per verdict", f"{prompts['cpu_ms']:.2f} ms"),
        ("today's verdict p50 (English model for every prompt)", f"{prompts['today_p50_ms']:.2f} ms"),
        ("today's verdict p99 (English model for every prompt)", f"{prompts['today_p99_ms']:.2f} ms"),
        ("  now / today, p50", f"{prompts['p50_ms'] / prompts['today_p50_ms']:.2f}×"),
        ("  now / today, p99", f"{prompts['p99_ms'] / prompts['today_p99_ms']:.2f}×"),
        ("multilingual model load", f"{prompts['multilingual_load_s']:.1f} s"),
        ("memory added by the multilingual model (RSS)", f"{prompts['multilingual_mb']:.0f} MB"),
        ("today's verdict p50, embedding on PyTorch (baseline)", f"{prompts['torch_p50_ms']:.2f} ms"),
        ("today's verdict p99, embedding on PyTorch (baseline)", f"{prompts['torch_p99_ms']:.2f} ms"),
        ("  PyTorch / ONNX Runtime, p50", f"{prompts['torch_p50_ms'] / prompts['today_p50_ms']:.1f}×"),
        ("  PyTorch / ONNX Runtime, p99", f"{prompts['torch_p99_ms'] / prompts['today_p99_ms']:.1f}×"),
        ("prompt verdict p50, words only (baseline)", f"{prompts['words_only_p50_ms']:.3f} ms"),
        ("prompt verdict p99, words only (baseline)", f"{prompts['words_only_p99_ms']:.3f} ms"),
        ("  embedding / words-only, p50", f"{prompts['p50_ms'] / prompts['words_only_p50_ms']:.0f}×"),
        ("batched verdicts (imagine moderate -)", f"{prompts['batched_prompts_per_s']:.0f} /s"),
        ("English embedding model load, ONNX Runtime", f"{prompts['model_load_s']:.1f} s"),
        ("embedding model load, PyTorch", f"{prompts['torch_model_load_s']:.1f} s"),
        ("image screening, 1280×1280", f"{images['screen_ms']:.1f} ms"),
        ("JPEG encoding, same image (baseline)", f"{images['jpeg_ms']:.1f} ms"),
        ("  screening / JPEG encoding", f"{images['screen_ms'] / images['jpeg_ms']:.1f}×"),
        ("withheld version (blur), 1280×1280", f"{images['withheld_blur_ms']:.1f} ms"),
        ("limiter decisions, direct", f"{limits['direct_per_s']:,.0f} /s"),
        ("limiter decisions, through await", f"{limits['async_per_s']:,.0f} /s"),
    ]
    print(
        f"moderation benchmark: {prompts['prompts']} prompt verdicts, {images['images']} images, "
        f"{limits['decisions']:,} limiter decisions; {os.cpu_count()} CPUs, torch threads {threads}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>12}")
    print("  per language: verdicts, p50 / p99 ms now, and now / today (p50, p99)")
    for language, row in prompts["by_language"].items():
        print(
            f"    {language}  {row['verdicts']:>4}  {row['p50_ms']:6.2f} / {row['p99_ms']:6.2f} ms"
            f"   ×{row['p50_ratio']:.2f}  ×{row['p99_ratio']:.2f}"
        )
    print(
        json.dumps(
            {
                "prompt_p50_ms": round(prompts["p50_ms"], 3),
                "prompt_p99_ms": round(prompts["p99_ms"], 3),
                "prompt_cpu_ms": round(prompts["cpu_ms"], 3),
                "prompt_today_p50_ms": round(prompts["today_p50_ms"], 3),
                "prompt_today_p99_ms": round(prompts["today_p99_ms"], 3),
                "multilingual_load_s": round(prompts["multilingual_load_s"], 2),
                "multilingual_added_mb": round(prompts["multilingual_mb"], 1),
                "by_language": {
                    k: {n: round(v, 3) for n, v in row.items()} for k, row in prompts["by_language"].items()
                },
                "prompt_torch_p50_ms": round(prompts["torch_p50_ms"], 3),
                "prompt_torch_p99_ms": round(prompts["torch_p99_ms"], 3),
                "prompt_words_only_p50_ms": round(prompts["words_only_p50_ms"], 4),
                "prompt_words_only_p99_ms": round(prompts["words_only_p99_ms"], 4),
                "prompt_batched_per_s": round(prompts["batched_prompts_per_s"], 1),
                "image_screen_ms": round(images["screen_ms"], 2),
                "image_jpeg_ms": round(images["jpeg_ms"], 2),
                "withheld_blur_ms": round(images["withheld_blur_ms"], 2),
                "limiter_decisions_per_s": round(limits["direct_per_s"]),
                "limiter_async_decisions_per_s": round(limits["async_per_s"]),
                "p99_goal_met": prompts["p99_ms"] < 20.0,
                "torch_threads": threads,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
                "cpus": os.cpu_count(),
                "load_average": round(load_before, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
