"""`imagine generate PROMPT`: render four images locally and write the JPEGs (no chat platform involved)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TextIO

from bots.cli.arguments import positive_int
from bots.errors import UsageError
from config.settings import Settings
from engine.errors import GenerationFailed, InvalidRequest
from engine.requests import GenerationRequest, JobResult, JobState, ProgressEvent, Timings
from engine.validation import prepare_record

BAR_WIDTH = 30


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="what to imagine")
    parser.add_argument("--seed", type=_seed, help="seed of the first image (image i uses seed + i)")
    parser.add_argument("--negative", default="", help="what the images should not show")
    parser.add_argument("--aspect", default="1:1", help="aspect ratio W:H, from 1:4 to 4:1 (default 1:1)")
    parser.add_argument("--steps", type=positive_int, help="denoising steps (default: engine.steps)")
    parser.add_argument("--out", default="out", help="folder for the JPEGs (default ./out)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of paths")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    settings = settings_loader()
    request = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, aspect=args.aspect, steps=args.steps
    )
    try:
        prepare_record(request, settings.engine)  # fail on bad input before spending seconds on the model
    except InvalidRequest as exc:
        raise UsageError(str(exc)) from None
    started = time.monotonic()
    result = asyncio.run(_generate(settings, request, args.out, show_progress=not args.json))
    if args.json:
        print(json.dumps(_summary(result, request, time.monotonic() - started)))
    else:
        for image in result.images:
            print(image.path)
    return 0


async def _generate(settings: Settings, request: GenerationRequest, out: str, show_progress: bool) -> JobResult:
    from engine.local import LocalJobQueue  # the GPU side, and so torch, only for the command that renders

    queue = LocalJobQueue(settings, output_dir=out)
    await queue.start()
    try:
        job = await queue.submit(request)
        progress = _ProgressBar(sys.stderr) if show_progress and sys.stderr.isatty() else None
        event = job.snapshot()
        async for event in job.events():
            if progress:
                progress.show(event)
        if progress:
            progress.close()
        if event.state is not JobState.DONE:
            raise GenerationFailed(event.error or f"the job ended {event.state.value}")
        await queue.mark_delivered(job.id)
        return JobResult(job_id=job.id, images=event.images, timings=event.timings or Timings())
    finally:
        await queue.shutdown()


def _summary(result: JobResult, request: GenerationRequest, total_s: float) -> dict[str, Any]:
    return {
        "job_id": result.job_id,
        "prompt": request.prompt,
        "seed": result.images[0].seed,
        "seeds": [image.seed for image in result.images],
        "paths": [image.path for image in result.images],
        "images": [
            {
                "path": image.path,
                "seed": image.seed,
                "width": image.width,
                "height": image.height,
                "watermark_id": image.watermark_id,
            }
            for image in result.images
        ],
        "timings": {**asdict(result.timings), "total_s": round(total_s, 3)},
    }


class _ProgressBar:
    """A one-line progress bar on a terminal: queue position, then denoising steps."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def show(self, event: ProgressEvent) -> None:
        if event.position:
            text = f"queued, position {event.position}"
        else:
            filled = int(BAR_WIDTH * event.fraction)
            text = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] step {event.step}/{event.total_steps}"
            if event.state.finished:
                text = f"[{'#' * BAR_WIDTH}] {event.state.value}"
        self.stream.write(f"\r{text:<60}")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must not be negative, got {value}")
    return value
