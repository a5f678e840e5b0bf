"""How `imagine serve` and `imagine worker` log: the level, with `log.format = "json"` one JSON object per line,
and never a configured secret.

JSON lines come from python-json-logger (a well-kept formatter, rather than one of our own): the record's
`extra` fields become keys, so a job's line (engine/metrics.py) carries job_id, platform, queue_wait_s, run_s
and outcome as fields a log pipeline can index.

Secrets are kept out of what we log ourselves, but libraries log at debug level what they send (slack_sdk
prints a request's form, an OAuth exchange's client secret included) and an error may quote a URL with its
password: every handler's output is passed through `SecretsRedacted`, which replaces each configured secret
with `[redacted]`, tracebacks included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from pythonjsonlogger.json import JsonFormatter

from config.settings import Settings

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
REDACTED = "[redacted]"
MIN_SECRET_CHARS = 6
"""Shorter values are not redacted: a test's or a typo's "x" would blank that letter everywhere."""


def apply_log_settings(settings: Settings, *, verbose: bool = False) -> None:
    """Set the root logger's level (debug with --verbose), the format of its handlers ("json" or text) and the
    redaction of `settings`' secrets in everything they write."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else getattr(logging, settings.log.level.upper()))
    secrets = secret_values(settings)
    for handler in root.handlers:
        inner = _json_formatter() if settings.log.format == "json" else handler.formatter or logging.Formatter()
        if isinstance(inner, SecretsRedacted):
            inner = inner.inner
        handler.setFormatter(SecretsRedacted(inner, secrets))


def secret_values(settings: Settings) -> list[str]:
    """Every secret the configuration holds: tokens, signing and client secrets, the session key, and the
    passwords in the store's and Redis' URLs."""
    values = [
        settings.discord.token,
        settings.discord.client_secret,
        settings.slack.bot_token,
        settings.slack.signing_secret,
        settings.slack.app_token,
        settings.slack.client_secret,
        settings.web.session_secret,
        _password(settings.store.url),
        _password(settings.engine.redis_url),
    ]
    return [value for value in values if value]


class SecretsRedacted(logging.Formatter):
    """Another formatter's output with every secret replaced by `[redacted]`."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        # Longest first: a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


def _json_formatter() -> logging.Formatter:
    return JsonFormatter(JSON_FIELDS, rename_fields=RENAMED)


def _password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:  # not a URL we could read: the store's own checks say so at start
        return ""
