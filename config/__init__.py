"""Configuration: the default file beside this module, a file given by the user, then the environment."""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
