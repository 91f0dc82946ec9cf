"""Settings: defaults from the manuals, the TOML file, environment overrides, clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from config import ConfigError, load_settings
from config.defaults import SECTIONS
from config.settings import default_config_text, write_default_config


def test_defaults_are_the_manuals_values(tmp_path: Path):
    settings = load_settings(tmp_path / "absent.toml", env={})
    assert settings.sip.max_rings == 3
    assert settings.tickets.response_hours_p1 == 2 and settings.tickets.resolution_hours_p3 == 72
    assert settings.callbacks.satisfaction_hours == 24 and settings.callbacks.supervisor_hours == 2
    assert settings.database_url.startswith("sqlite:///") and settings.redis.url == ""


def test_every_manual_number_names_its_source():
    for name in ("tickets", "callbacks"):
        for field_name, field in SECTIONS[name].model_fields.items():
            if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
                assert (field.json_schema_extra or {}).get("source"), f"{name}.{field_name} has no source"


def test_file_then_environment(tmp_path: Path):
    path = tmp_path / "hotline.toml"
    path.write_text('[sip]\nanswer_delay = 2.5\n[database]\nurl = "sqlite:////x.db"\n', encoding="utf-8")
    env = {"HOTLINE_HOME": str(tmp_path / "h"), "HOTLINE_DATABASE_URL": "postgresql://db/x",
           "REDIS_URL": "redis://127.0.0.1:6379/3"}
    settings = load_settings(path, env=env)
    assert settings.sip.answer_delay == 2.5
    assert settings.database_url == "postgresql+psycopg://db/x"
    assert settings.redis.url == "redis://127.0.0.1:6379/3"
    assert settings.home == tmp_path / "h"


def test_hotline_config_names_the_file(tmp_path: Path):
    path = tmp_path / "elsewhere.toml"
    path.write_text('[general]\ncompany_name = "好运公司"\n', encoding="utf-8")
    assert load_settings(env={"HOTLINE_CONFIG": str(path)}).general.company_name == "好运公司"


@pytest.mark.parametrize(("content", "named"), [
    ("[sip]\nmax_rings = \"three\"\n", "sip.max_rings"),
    ("[sip]\nanswr_delay = 1\n", "sip.answr_delay"),
    ("[sip]\nanswer_delay = 20\n", "answer_delay"),
    ("[tickets]\nresponse_hours_p1 = [1]\n", "tickets.response_hours_p1"),
    ("[nonsense]\nx = 1\n", "nonsense"),
    ("[sip\n", "not valid TOML"),
])
def test_bad_config_is_one_clear_error_naming_the_key(tmp_path: Path, content: str, named: str):
    path = tmp_path / "hotline.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(path, env={})


def test_default_config_file_is_valid_toml_with_every_setting_and_source(tmp_path: Path):
    path = tmp_path / "config" / "hotline.toml"
    assert write_default_config(path) and not write_default_config(path)
    parsed = tomllib.loads(path.read_text(encoding="utf-8"))
    assert set(parsed) == set(SECTIONS)
    assert "Source: manual 001" in default_config_text()
    assert load_settings(path, env={}).tickets.receipt_hours == 1


@pytest.mark.parametrize(("given", "used"), [
    ("postgresql://postgres@127.0.0.1:5432/test", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    ("postgres://u:pw@db/x?sslmode=require", "postgresql+psycopg://u:pw@db/x?sslmode=require"),
    ("postgresql+psycopg2://db/x", "postgresql+psycopg://db/x"),
    ("postgresql+psycopg://db/x", "postgresql+psycopg://db/x"),
    ("sqlite:////srv/hotline/hotline.db", "sqlite:////srv/hotline/hotline.db"),
])
def test_postgresql_urls_run_on_psycopg_3(tmp_path: Path, given: str, used: str):
    assert load_settings(tmp_path / "absent.toml", env={"HOTLINE_DATABASE_URL": given}).database_url == used


DATABASE = ("HOTLINE_DATABASE_URL", "database.url / HOTLINE_DATABASE_URL")
REDIS = ("REDIS_URL", "redis.url / REDIS_URL")


@pytest.mark.parametrize(("service", "url", "phrase"), [
    (DATABASE, "mysql://root:secret@db/hotline", "mysql:// is not supported"),
    (DATABASE, "garbage", "is not a database URL ('garbage')"),
    (DATABASE, "postgresql://db:port/x", "the port is not a number"),
    (DATABASE, "sqlite:///hotline.db", "the SQLite path 'hotline.db' is relative"),
    (DATABASE, "sqlite://", "in-memory SQLite database"),
    (REDIS, "http://cache:6379", "is not a Redis URL ('http://cache:6379')"),
    (REDIS, "localhost:6379", "is not a Redis URL"),
    (REDIS, "redis://:secret@cache:63x9/0", "the port is not a number"),
    (REDIS, "redis://cache:6379/queue", "the Redis database must be a number"),
    (REDIS, "unix://", "names no socket"),
])
def test_an_unusable_service_url_is_one_line_naming_the_setting(tmp_path: Path, service: tuple[str, str], url: str,
                                                                 phrase: str):
    variable, setting = service
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path / "absent.toml", env={variable: url})
    message = str(raised.value)
    assert phrase in message and setting in message and "\n" not in message
    assert "secret" not in message


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/3", "rediss://:pw@cache:6380/0", "unix:///run/redis.sock"])
def test_redis_urls_accepted(tmp_path: Path, url: str):
    assert load_settings(tmp_path / "absent.toml", env={"REDIS_URL": url}).redis.url == url


def test_a_url_in_the_file_is_checked_like_one_in_the_environment(tmp_path: Path):
    path = tmp_path / "hotline.toml"
    path.write_text('[database]\nurl = "mssql://db/x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="mssql:// is not supported"):
        load_settings(path, env={})


def test_a_do_not_call_entry_that_is_no_number_is_refused_when_the_config_is_read() -> None:
    from pydantic import ValidationError

    from config.defaults import Callbacks

    assert Callbacks(do_not_call=["138-0013-8000", "+86 139 0013 9000"]).do_not_call
    with pytest.raises(ValidationError, match="not a phone number"):
        Callbacks(do_not_call=["call me"])
