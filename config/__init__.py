"""Settings of Hotline: defaults (with the manual each comes from), TOML file, environment."""

from config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
