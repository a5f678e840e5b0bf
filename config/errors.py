"""Configuration's one exception."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid. The message names the key, where it came from and the
    environment variable to set."""
