"""Loading the settings: defaults, then the TOML file, then environment overrides.

``HOTLINE_CONFIG`` names the TOML file (default ``config/hotline.toml``),
``HOTLINE_HOME`` the data directory (recordings, SQLite file, embedded Redis),
``HOTLINE_DATABASE_URL`` and ``REDIS_URL`` override the two service URLs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from config.defaults import SECTIONS, Section, default_home
from config.defaults import (
    Callbacks, Database, General, Prompts, RedisSettings, Recording, Sip, Tickets, Transcription, Web,
)

DEFAULT_CONFIG_PATH = Path("config/hotline.toml")


class ConfigError(Exception):
    """A setting is wrong; the message names the key. The CLI exits with code 2."""


class Settings(Section):
    """All settings of one Hotline installation."""

    home: Path
    config_path: Path
    general: General = General()
    database: Database = Database()
    redis: RedisSettings = RedisSettings()
    web: Web = Web()
    sip: Sip = Sip()
    prompts: Prompts = Prompts()
    recording: Recording = Recording()
    tickets: Tickets = Tickets()
    callbacks: Callbacks = Callbacks()
    transcription: Transcription = Transcription()

    @model_validator(mode="after")
    def _answer_within_rings(self) -> "Settings":
        limit = self.sip.max_rings * self.sip.ring_seconds
        if not 0 <= self.sip.answer_delay < limit:
            raise ValueError(f"sip.answer_delay must be between 0 and {limit:g} s (max_rings × ring_seconds)")
        if self.sip.rtp_port_min >= self.sip.rtp_port_max:
            raise ValueError("sip.rtp_port_min must be below sip.rtp_port_max")
        return self

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.home / 'hotline.db'}"

    @property
    def recordings_dir(self) -> Path:
        return Path(self.recording.directory) if self.recording.directory else self.home / "recordings"

    @property
    def uses_local_pbx(self) -> bool:
        return not self.sip.pbx_host


def load_settings(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings; a missing file means all defaults. Raises ConfigError naming the bad key."""
    env = os.environ if env is None else env
    config_path = Path(path or env.get("HOTLINE_CONFIG") or DEFAULT_CONFIG_PATH)
    data = _read_toml(config_path)
    data["home"] = env.get("HOTLINE_HOME") or data.get("home") or default_home()
    for section, key, var in (("database", "url", "HOTLINE_DATABASE_URL"), ("redis", "url", "REDIS_URL")):
        if env.get(var):
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                raise ConfigError(f"{config_path}: [{section}] must be a table")
            data[section][key] = env[var]
    data["config_path"] = config_path
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_path)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _describe(exc: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


def default_config_text() -> str:
    """The default hotline.toml: every setting, commented with its meaning and its manual."""
    out = ["# Hotline configuration. Every value shown is the default; the source names the manual.", ""]
    for name, section in SECTIONS.items():
        out.append(f"[{name}]")
        for field_name, field in section.model_fields.items():
            source = (field.json_schema_extra or {}).get("source")
            out.append(f"# {field.description}" + (f" Source: {source}." if source else ""))
            out.append(f"{field_name} = {_toml_value(field.default)}")
        out.append("")
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def write_default_config(path: Path) -> bool:
    """Write the default config if absent; True when written."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(default_config_text(), encoding="utf-8")
    return True
