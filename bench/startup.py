"""Start-up costs in fresh processes: `imagine review list` (must load no torch) and `imagine serve` until it logs
"imagine is serving" (tiny model, no chat credentials), for this tree and optionally another one (e.g. a checkout
of an older commit) in alternating rounds, so both see the same machine.

    .venv/bin/python bench/startup.py                      # this tree only
    .venv/bin/python bench/startup.py --baseline ../old    # ratios against another checkout (same venv)

Last line: one JSON object with the medians and, with --baseline, the ratios (this tree ÷ baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVING = "imagine is serving"
TORCH_IMPORT = re.compile(r"\|\s*torch$")
"""PYTHONPROFILEIMPORTTIME's line for the top-level torch package (indented by import depth)."""


def environment(tree: Path, scratch: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGINE_")}
    return env | {
        "PYTHONPATH": str(tree),
        "IMAGINE_STORE__URL": f"sqlite:///{scratch}/imagine.db",
        "IMAGINE_ENGINE__OUTPUT_DIR": str(scratch / "images"),
        "IMAGINE_ENGINE__BASE_SIZE": "64",
        "IMAGINE_MODERATION__IMAGE_SCREENING": "false",
        "IMAGINE_WEB__PORT": "0",
    }


def review_list(tree: Path, scratch: Path) -> tuple[float, bool]:
    """Seconds for `imagine review list`, and whether torch was imported."""
    env = environment(tree, scratch) | {"PYTHONPROFILEIMPORTTIME": "1"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "bots", "review", "list"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    elapsed = time.perf_counter() - started
    return elapsed, any(TORCH_IMPORT.search(line) for line in result.stderr.splitlines())


def serve_until_serving(tree: Path, scratch: Path) -> float:
    """Seconds from launching `imagine serve` to its "serving" log line; then it is stopped with SIGTERM."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "bots", "serve"],
        cwd=tree,
        env=environment(tree, scratch),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if SERVING in line:
                return time.perf_counter() - started
        raise RuntimeError(f"imagine serve exited ({process.wait()}) before serving")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


def measure(tree: Path, rounds: int) -> dict[str, list[float] | bool]:
    review, serve, torch_loaded = [], [], False
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        for _ in range(rounds):
            seconds, loaded = review_list(tree, scratch)
            review.append(seconds)
            torch_loaded |= loaded
            serve.append(serve_until_serving(tree, scratch))
    return {"review_list_s": review, "serve_ready_s": serve, "review_list_loads_torch": torch_loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout to compare against (same venv)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    samples: dict[str, dict[str, list[float] | bool]] = {name: {} for name in trees}
    for _ in range(args.rounds):  # alternate the trees round by round: both see the same machine
        for name, tree in trees.items():
            one = measure(tree, 1)
            for key, value in one.items():
                if isinstance(value, bool):
                    samples[name][key] = bool(samples[name].get(key)) or value
                else:
                    current = samples[name].setdefault(key, [])
                    assert isinstance(current, list)
                    current.extend(value)
    summary: dict[str, object] = {}
    for name, values in samples.items():
        for key, value in values.items():
            summary[f"{name}_{key}"] = value if isinstance(value, bool) else round(statistics.median(value), 3)
            if not isinstance(value, bool):
                print(f"{name:9s} {key:16s} median {statistics.median(value):7.2f} s  runs {value}")
    if args.baseline:
        for key in ("review_list_s", "serve_ready_s"):
            summary[f"{key}_ratio"] = round(float(summary[f"this_{key}"]) / float(summary[f"baseline_{key}"]), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
