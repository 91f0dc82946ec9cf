"""Loading the settings: defaults, then the TOML file, then environment overrides.

``HOTLINE_CONFIG`` names the TOML file (default ``config/hotline.toml``),
``HOTLINE_HOME`` the data directory (recordings, SQLite file, embedded Redis),
``HOTLINE_DATABASE_URL`` and ``REDIS_URL`` override the two service URLs.

The service URLs are checked here, so a URL Hotline cannot use stops every command at once with
one line naming the setting (``ConfigError``). PostgreSQL URLs in any of their usual forms run on
psycopg 3, the driver Hotline ships.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import date, time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError, model_validator

from config.defaults import SECTIONS, Section, default_home
from config.defaults import (
    Callbacks, Database, General, Prompts, Queues, RedisSettings, Recording, Sip, Tickets, Transcription, Web,
)

DEFAULT_CONFIG_PATH = Path("config/hotline.toml")

DATABASE_URL_SETTING = "database.url / HOTLINE_DATABASE_URL"
REDIS_URL_SETTING = "redis.url / REDIS_URL"
DATABASE_URL_FORMS = ("use postgresql://user:password@host:5432/dbname (postgres:// and postgresql+psycopg:// work too) "
                      "or sqlite:////absolute/path/hotline.db, or leave it empty for a SQLite file under HOTLINE_HOME")
REDIS_URL_FORMS = ("use redis://[:password@]host:6379/0, rediss://… (TLS) or unix:///path/to/redis.sock, "
                   "or leave it empty for the embedded Redis")
# Every spelling of PostgreSQL is served by psycopg 3; psycopg2 is not installed.
POSTGRESQL_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")
REDIS_SCHEMES = ("redis", "rediss", "unix")
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


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
    queues: Queues = Queues()
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

    @model_validator(mode="after")
    def _usable_service_urls(self) -> "Settings":
        # ConfigError is no ValueError, so pydantic lets it through as it is: one line, exit 2.
        self.database.url = usable_database_url(self.database.url)
        self.redis.url = usable_redis_url(self.redis.url)
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


def usable_database_url(url: str) -> str:
    """``url`` as Hotline connects to it (PostgreSQL through psycopg 3); ConfigError if it cannot be used."""
    if not url:
        return url
    scheme = SCHEME.match(url)
    if scheme is None:
        raise ConfigError(f"{DATABASE_URL_SETTING} is not a database URL ({hide_password(url)!r}): {DATABASE_URL_FORMS}")
    name = scheme.group(1).lower()
    if name in POSTGRESQL_SCHEMES:
        _check_port(url, DATABASE_URL_SETTING, DATABASE_URL_FORMS)
        return "postgresql+psycopg" + url[len(name):]
    if name in SQLITE_SCHEMES:
        _check_sqlite_path(url[scheme.end():])
        return url
    raise ConfigError(f"{DATABASE_URL_SETTING}: {name}:// is not supported (Hotline ships drivers for PostgreSQL "
                      f"and SQLite only): {DATABASE_URL_FORMS}")


def _check_sqlite_path(rest: str) -> None:
    # Every service must open the same file, whatever directory it was started in.
    path = rest.removeprefix("/").partition("?")[0]
    if path in ("", ":memory:"):
        raise ConfigError(f"{DATABASE_URL_SETTING}: an in-memory SQLite database would be a different, empty "
                          f"one in every process: {DATABASE_URL_FORMS}")
    if not path.startswith("/"):
        raise ConfigError(f"{DATABASE_URL_SETTING}: the SQLite path {path!r} is relative, so each command would "
                          f"open a file in the directory it happens to run in: write it absolute "
                          f"(sqlite:////path/to/hotline.db, four slashes), or leave it empty for HOTLINE_HOME")


def usable_redis_url(url: str) -> str:
    """``url`` if Hotline can connect to a Redis with it; ConfigError naming redis.url / REDIS_URL if not."""
    if not url:
        return url
    scheme = SCHEME.match(url)
    if scheme is None or scheme.group(1).lower() not in REDIS_SCHEMES:
        raise ConfigError(f"{REDIS_URL_SETTING} is not a Redis URL ({hide_password(url)!r}): {REDIS_URL_FORMS}")
    if scheme.group(1).lower() == "unix":
        if not urlsplit(url).path:
            raise ConfigError(f"{REDIS_URL_SETTING} names no socket ({url!r}): {REDIS_URL_FORMS}")
        return url
    _check_port(url, REDIS_URL_SETTING, REDIS_URL_FORMS)
    database = urlsplit(url).path.strip("/")
    if database and not database.isdigit():
        raise ConfigError(f"{REDIS_URL_SETTING}: the Redis database must be a number, not {database!r} "
                          f"({hide_password(url)!r}): {REDIS_URL_FORMS}")
    return url


def _check_port(url: str, setting: str, forms: str) -> None:
    try:
        urlsplit(url).port
    except ValueError:
        raise ConfigError(f"{setting}: the port is not a number from 1 to 65535 ({hide_password(url)!r}): {forms}") from None


def hide_password(url: str) -> str:
    """``url`` fit for messages and logs: the password, if any, shown as ***."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


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
    if isinstance(value, time):
        return _toml_value(value.isoformat(timespec="minutes"))
    if isinstance(value, date):
        return _toml_value(value.isoformat())
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
