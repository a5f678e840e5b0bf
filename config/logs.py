"""How `imagine serve` logs: the level and, with `log.format = "json"`, one JSON object per line.

JSON lines come from python-json-logger (a well-kept formatter, rather than one of our own): the record's
`extra` fields become keys, so a job's line (engine/metrics.py) carries job_id, platform, queue_wait_s, run_s
and outcome as fields a log pipeline can index.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from config.settings import LogSettings

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}


def apply_log_settings(settings: LogSettings, *, verbose: bool = False) -> None:
    """Set the root logger's level (debug with --verbose) and, for "json", the format of its handlers."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else getattr(logging, settings.level.upper()))
    if settings.format == "json":
        formatter = JsonFormatter(JSON_FIELDS, rename_fields=RENAMED)
        for handler in root.handlers:
            handler.setFormatter(formatter)
