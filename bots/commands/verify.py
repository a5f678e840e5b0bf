"""`imagine verify IMAGE...`: does each image carry the invisible watermark (and under what transformation),
which job made it, is its C2PA manifest there and valid or stripped, do the two agree, is there AI metadata.
Exit 0 only if every image carries the watermark, 1 if one does not, 2 if one cannot be read (the others are
still reported)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bots.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from config.settings import Settings
from engine.provenance.c2pa_manifest import service_trust_anchor
from engine.provenance.verify import Lookup, VerifyReport, verify_file
from engine.store import UnsupportedStore, open_store, sqlite_path

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check images for the invisible watermark, the C2PA manifest and AI metadata",
        description="For each image: whether the invisible watermark is present, its payload, what the image went "
        "through (rotation, mirroring, scale), the job it maps to (when the job store knows it), "
        "whether a C2PA manifest is there and valid (signature and hash binding) or stripped, "
        "whether the two agree, and whether the AI metadata is there. Exit 0 only if every image "
        "carries the watermark, 1 otherwise, 2 if an image cannot be read.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with a report per image")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    settings = settings_loader()
    anchor = service_trust_anchor(settings.provenance.c2pa_cert, settings.engine.cache_dir)
    with _job_lookup(settings.store.url) as lookup:
        reports = [verify_file(path, lookup, anchor) for path in args.images]
    if args.json:
        print(
            json.dumps(
                {"all_marked": all(r.watermark_found for r in reports), "images": [r.to_dict() for r in reports]}
            )
        )
    else:
        for report in reports:
            if report.readable:
                print(f"{report.source}: {_describe(report)}")
            else:
                print(f"error: {report.source}: {report.error}", file=sys.stderr)
    if not all(r.readable for r in reports):
        return EXIT_USAGE
    return EXIT_OK if all(r.watermark_found for r in reports) else EXIT_FAILURE


def _describe(report: VerifyReport) -> str:
    if report.watermark_found:
        mark = f"watermark found, id {report.watermark_id}"
        mark += f" (job {report.job_id}, image {report.image_index})" if report.job_id else " (job not in the store)"
        mark += f", {report.watermark_transformation}"
    else:
        mark = "no watermark"
    return f"{mark}; {_describe_manifest(report)}; AI metadata: {'yes' if report.metadata_found else 'no'}"


def _describe_manifest(report: VerifyReport) -> str:
    if not report.manifest_found:
        return "C2PA manifest: none (never signed, or stripped)"
    if report.manifest_valid:
        trust = "trusted" if report.manifest_trusted else "signer not trusted"
        text = f"C2PA manifest: valid, signed by {report.manifest_signer or 'unknown'} ({trust})"
    else:
        text = f"C2PA manifest: INVALID ({', '.join(report.manifest_issues) or 'unknown reason'})"
    if report.manifest_matches_watermark is not None:
        text += ", names this watermark" if report.manifest_matches_watermark else ", names a DIFFERENT watermark"
    return text


@contextlib.contextmanager
def _job_lookup(store_url: str) -> Iterator[Lookup | None]:
    """The job store's watermark lookup, if a store exists: verifying never creates one."""
    try:
        path = sqlite_path(store_url)
    except UnsupportedStore as exc:
        logger.warning("jobs cannot be looked up: %s", exc)
        yield None
        return
    if path == ":memory:" or not Path(path).expanduser().is_file():
        yield None
        return
    try:
        store = open_store(store_url)
    except sqlite3.Error as exc:
        logger.warning("jobs cannot be looked up: the job store at %s cannot be opened: %s", path, exc)
        yield None
        return
    try:
        yield store.find_image_by_watermark
    finally:
        store.close()
