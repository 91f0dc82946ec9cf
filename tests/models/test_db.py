"""Migrations match the models; what goes wrong reaching the database is one clear message."""

import socket
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import exc as sql_errors, text

from config import Settings, load_settings
from models import Base
from models.db import DatabaseUnavailable, check_database, database_problem, engine, session_scope, upgrade


def test_migrations_match_the_models(settings):
    with engine(settings).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


# --- What goes wrong reaching the database ---------------------------------------------------

def settings_for(url: str, tmp_path: Path) -> Settings:
    return load_settings(tmp_path / "absent.toml", env={"HOTLINE_DATABASE_URL": url, "HOTLINE_HOME": str(tmp_path)})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_migrated_database_passes_the_check(settings):
    check_database(settings)


def test_an_uninitialised_sqlite_file_says_run_hotline_init(tmp_path):
    settings = settings_for(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)
    with pytest.raises(DatabaseUnavailable) as raised:
        check_database(settings)
    assert str(raised.value) == (f"the database at sqlite:///{tmp_path / 'fresh.db'} is not initialised: "
                                 "run `hotline init` (or `hotline db upgrade`)")
    assert not raised.value.transient


def test_a_schema_behind_the_newest_migration_is_not_initialised(tmp_path):
    settings = settings_for(f"sqlite:///{tmp_path / 'old.db'}", tmp_path)
    upgrade(settings, "0001")
    with pytest.raises(DatabaseUnavailable, match=r"is not initialised \(schema revision 0001\): run `hotline init`"):
        check_database(settings)


def test_no_such_table_from_a_query_means_not_initialised(tmp_path):
    settings = settings_for(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)
    with pytest.raises(sql_errors.OperationalError) as raised, session_scope(settings) as session:
        session.execute(text("SELECT * FROM calls"))
    problem = database_problem(raised.value, settings)
    assert problem is not None and "is not initialised: run `hotline init`" in str(problem)


def test_a_failure_that_is_no_database_problem_is_left_alone(db, settings):
    with pytest.raises(sql_errors.IntegrityError) as raised:
        db.execute(text("INSERT INTO users (id) VALUES (NULL)"))
    assert database_problem(raised.value, settings) is None


def test_a_missing_sqlite_directory_names_the_path(tmp_path):
    settings = settings_for("sqlite:////nonexistent-dir/hotline.db", tmp_path)
    with pytest.raises(DatabaseUnavailable, match=r"cannot be used \(unable to open database file\): check the path "
                                                  r"in database.url / HOTLINE_DATABASE_URL"):
        check_database(settings)


def test_postgresql_on_a_closed_port_does_not_answer(tmp_path):
    port = closed_port()
    settings = settings_for(f"postgresql://postgres:secret@127.0.0.1:{port}/test", tmp_path)
    with pytest.raises(DatabaseUnavailable) as raised:
        check_database(settings)
    assert str(raised.value) == (f"the database at postgresql+psycopg://postgres:***@127.0.0.1:{port}/test does not "
                                 "answer (connection refused): check database.url / HOTLINE_DATABASE_URL, "
                                 "or start the server")
    assert raised.value.transient and raised.value.reason == "connection refused"


@pytest.mark.postgres
def test_an_unknown_database_on_the_real_server_says_create_it(tmp_path):
    settings = settings_for("postgresql://postgres@127.0.0.1:5432/hotline_no_such_db", tmp_path)
    with pytest.raises(DatabaseUnavailable) as raised:
        check_database(settings)
    assert ('cannot be used (database "hotline_no_such_db" does not exist): create it (createdb hotline_no_such_db) '
            "or check database.url / HOTLINE_DATABASE_URL") in str(raised.value)
    assert not raised.value.transient


@pytest.mark.postgres
def test_an_unknown_user_on_the_real_server_says_check_the_user(tmp_path):
    settings = settings_for("postgresql://hotline_nobody@127.0.0.1:5432/test", tmp_path)
    with pytest.raises(DatabaseUnavailable, match=r'role "hotline_nobody" does not exist\): check the user in '
                                                  r"database.url / HOTLINE_DATABASE_URL"):
        check_database(settings)
