"""Fixtures every test folder shares: settings on a fresh database, a session, the CLI.

The database is SQLite unless HOTLINE_TEST_DATABASE=postgresql; then each test gets a schema
of its own on the server at HOTLINE_TEST_POSTGRES_URL (default: the local ``test`` database). Redis is embedded unless HOTLINE_TEST_REDIS_URL is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from config import Settings, load_settings
from models.db import session_factory, upgrade

POSTGRES_URL = os.environ.get("HOTLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_schema_url(base_url: str, schema: str) -> str:
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A URL of an empty schema of its own on the PostgreSQL server; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield postgres_schema_url(POSTGRES_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if os.environ.get("HOTLINE_TEST_DATABASE") == "postgresql":
        return request.getfixturevalue("postgres_database")
    return f"sqlite:///{tmp_path / 'home' / 'hotline.db'}"


@pytest.fixture
def hotline_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment of a Hotline installation in a temporary home."""
    env = {
        "HOTLINE_HOME": str(tmp_path / "home"),
        "HOTLINE_CONFIG": str(tmp_path / "hotline.toml"),
        "HOTLINE_DATABASE_URL": database_url,
    }
    if os.environ.get("HOTLINE_TEST_REDIS_URL"):
        env["REDIS_URL"] = os.environ["HOTLINE_TEST_REDIS_URL"]
    return env


@pytest.fixture
def settings(hotline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a fresh installation, its database migrated; also set in the environment."""
    for key, value in hotline_env.items():
        monkeypatch.setenv(key, value)
    if "REDIS_URL" not in hotline_env:
        monkeypatch.delenv("REDIS_URL", raising=False)
    loaded = load_settings()
    upgrade(loaded)
    if loaded.redis.url:
        # The shared test Redis database starts each test empty, as an embedded one would.
        Redis.from_url(loaded.redis.url).flushdb()
    return loaded


@pytest.fixture
def db(settings: Settings) -> Iterator[Session]:
    session = session_factory(settings)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


@pytest.fixture
def cli(settings: Settings) -> CliRunner:
    return CliRunner()
