"""`imagine moderate [PROMPT | -] [--json]`: the moderation verdict for a prompt, or for every line of stdin.

With `-`, each input line is one prompt and each output line one JSON object
{"prompt": ..., "action": "allow"|"review"|"block", "reasons": [...]}, in input order (a blank line gives
an "allow" line, so outputs stay aligned with inputs). The model is loaded once and lines are judged in
batches, so thousands of prompts take seconds. Reasons are moderator-facing (they quote matched terms).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from bots.errors import UsageError
from config.settings import Settings
from moderation import embedding
from moderation.prompts import PromptModerator
from moderation.verdict import Verdict

BATCH_LINES = 64


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", help="the prompt to judge, or - to read one prompt per line from stdin")
    parser.add_argument("--json", action="store_true", help="print one JSON object (always JSON lines with -)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    if args.prompt is None:
        raise UsageError("give a PROMPT to judge, or - to read prompts from stdin")
    settings = settings_loader()
    # The first run on a machine exports the embedding model (~15 s): say so on stderr rather than wait silently.
    logging.getLogger(embedding.__name__).setLevel(logging.INFO)
    moderator = PromptModerator.from_settings(settings.moderation, settings.engine.cache_dir)
    if args.prompt == "-":
        moderate_lines(moderator, _stdin_lines(), sys.stdout)
        return 0
    verdict = moderator.moderate(args.prompt)
    if args.json:
        print(json.dumps({"prompt": args.prompt, **verdict.to_dict()}, ensure_ascii=False))
    else:
        print(describe(verdict))
    return 0


def moderate_lines(moderator: PromptModerator, lines: Iterator[str], out: TextIO) -> int:
    """Judge prompts in batches; one JSON line out per line in. Returns how many lines were judged."""
    count = 0
    for batch in _batches(lines, BATCH_LINES):
        for prompt, verdict in zip(batch, moderator.moderate_many(batch), strict=True):
            record = {"prompt": prompt, "action": verdict.action.value, "reasons": list(verdict.reasons)}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
        count += len(batch)
    return count


def describe(verdict: Verdict) -> str:
    lines = [verdict.action.value + (f" ({verdict.user_reason})" if verdict.user_reason else "")]
    lines += [f"  - {reason}" for reason in verdict.reasons]
    if verdict.ban:
        lines.append("  - bans the requester at once, pending review")
    return "\n".join(lines)


def _stdin_lines() -> Iterator[str]:
    # Bytes in, decoded leniently: an odd byte from a pipe must not stop a run of thousands of prompts.
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline=None)
    for line in stream:
        yield line.rstrip("\n")


def _batches(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
