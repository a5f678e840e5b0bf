"""`imagine verify IMAGE...`: does each image carry the invisible watermark (and under what transformation),
which job made it, is its C2PA manifest there and valid or stripped, do the two agree, is there AI metadata.
Exit 0 only if every image carries the watermark, 1 if one does not, 2 if one cannot be read (the others are
still reported)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from bots.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from config.settings import Settings
from engine.provenance.c2pa_manifest import service_trust_anchor
from engine.provenance.verify import VerifyReport, verify_file
from engine.store import JobStore
from storage.database import Database
from storage.errors import StorageError, UnsupportedStore
from storage.urls import MEMORY, is_sqlite, sqlite_path

logger = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "For each image: whether the invisible watermark is present, its payload, what the image went "
        "through (rotation, mirroring, scale), the job it maps to (when the job store knows it), "
        "whether a C2PA manifest is there and valid (signature and hash binding) or stripped, "
        "whether the two agree, and whether the AI metadata is there. Exit 0 only if every image "
        "carries the watermark, 1 otherwise, 2 if an image cannot be read."
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP...)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with a report per image")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    settings = settings_loader()
    store_url = settings.store.url
    anchor = service_trust_anchor(settings.provenance.c2pa_cert, settings.engine.cache_dir)
    reports = [verify_file(path, trust_anchors=anchor) for path in args.images]
    if any(report.watermark_found for report in reports) and _store_exists(store_url):
        reports = asyncio.run(_with_jobs(store_url, reports))
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


async def _with_jobs(store_url: str, reports: list[VerifyReport]) -> list[VerifyReport]:
    """The reports with the job each found watermark maps to, if the job store knows it."""
    store = await _job_store(store_url)
    if store is None:
        return reports
    try:
        return [await _with_job(store, report) for report in reports]
    except StorageError as exc:
        logger.warning("jobs cannot be looked up: %s", exc)
        return reports
    finally:
        await store.close()


async def _with_job(store: JobStore, report: VerifyReport) -> VerifyReport:
    job = await store.find_image_by_watermark(report.watermark_id) if report.watermark_id else None
    return dataclasses.replace(report, job_id=job[0], image_index=job[1]) if job else report


def _store_exists(store_url: str) -> bool:
    """Verifying never creates a job store: a SQLite file that is not there has no jobs to find."""
    try:
        path = sqlite_path(store_url) if is_sqlite(store_url) else None
    except UnsupportedStore as exc:
        logger.warning("jobs cannot be looked up: %s", exc)
        return False
    return path is None or (path != MEMORY and Path(path).expanduser().is_file())


async def _job_store(store_url: str) -> JobStore | None:
    """The job store, used as it is: verifying never migrates one."""
    try:
        return JobStore(await Database.open(store_url, migrate_schema=False), owns_database=True)
    except StorageError as exc:  # UnsupportedStore included
        logger.warning("jobs cannot be looked up: the job store cannot be opened: %s", exc)
    return None
