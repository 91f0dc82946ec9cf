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
    assert settings.database_url == "postgresql://db/x"
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
