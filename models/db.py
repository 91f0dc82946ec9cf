"""Engines, sessions and schema upgrades (Alembic) for the configured database.

What goes wrong reaching the database is said here once: ``database_problem`` turns a driver's
error into a ``DatabaseUnavailable`` whose message names the setting and what to do, and
``check_database`` is the services' start-up check (one connection: Alembic's revision against
the newest migration), never repeated per query.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, exc as sql_errors, make_url
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from config.settings import DATABASE_URL_SETTING, hide_password

MIGRATIONS = Path(__file__).with_name("migrations")
# Seconds a PostgreSQL connection attempt may take: a server that does not answer is reported, not
# waited on for the minutes TCP would take to give up.
CONNECT_TIMEOUT = 5
IDLE_IN_TRANSACTION_MS = 30_000  # PostgreSQL ends a session idle in a transaction this long
INIT_ADVICE = "run `hotline init` (or `hotline db upgrade`)"
START_ADVICE = f"check {DATABASE_URL_SETTING}, or start the server"

# What drivers say when the server does not answer (waiting helps), and the reason we give.
NO_ANSWER = (
    ("connection refused", "connection refused"),
    ("failed to resolve host", "unknown host"),
    ("could not translate host name", "unknown host"),
    ("name or service not known", "unknown host"),
    ("timeout expired", f"no answer within {CONNECT_TIMEOUT} s"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("the database system is starting up", "the server is starting up"),
    ("the database system is shutting down", "the server is shutting down"),
    ("terminating connection", "the server closed the connection"),
    ("server closed the connection", "the server closed the connection"),
    ("consuming input failed", "the connection was lost"),
    ("the connection is closed", "the connection was lost"),
    ("database is locked", "locked by another writer"),
)
# What a server says when it answers but refuses us (waiting does not help): pattern, what to do.
REFUSED = (
    (r'database "(?P<name>[^"]+)" does not exist', "create it (createdb {name}) or check " + DATABASE_URL_SETTING),
    (r'role "[^"]+" does not exist', f"check the user in {DATABASE_URL_SETTING}"),
    (r"password authentication failed[^\n]*", f"check the user and password in {DATABASE_URL_SETTING}"),
    (r"no password supplied", f"put the password in {DATABASE_URL_SETTING}"),
    (r"no pg_hba\.conf entry[^\n]*", f"allow this client in the server's pg_hba.conf, or check {DATABASE_URL_SETTING}"),
    (r"unable to open database file", f"check the path in {DATABASE_URL_SETTING} (its directory must exist)"),
    (r"file is not a database", f"point {DATABASE_URL_SETTING} at a SQLite database file"),
)


class Unavailable(Exception):
    """A server Hotline talks to (the database, Redis) cannot be used as configured.

    ``str()`` is the one-line message for the user. ``subject`` ("the database at …") and
    ``reason`` ("connection refused") make a waiting service's log line; ``transient`` says
    whether waiting can help (the server does not answer) or not (a refused login, no schema).
    """

    def __init__(self, message: str, *, subject: str, reason: str, transient: bool) -> None:
        super().__init__(message)
        self.subject = subject
        self.reason = reason
        self.transient = transient


class DatabaseUnavailable(Unavailable):
    """The configured database cannot be used now (``transient``) or until someone acts."""


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine (connection pool) per database URL per process."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    query = make_url(url).query
    connect_args: dict[str, object] = {} if "connect_timeout" in query else {"connect_timeout": CONNECT_TIMEOUT}
    options = query.get("options", "")
    if isinstance(options, str) and "idle_in_transaction_session_timeout" not in options:
        # A process cut off from the server mid-transaction (network gone, killed) would otherwise
        # hold its locks until TCP gives up, hours later; Hotline's transactions take milliseconds.
        # Added to the URL's own options (a search_path, say), which these replace.
        connect_args["options"] = f"{options} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}".strip()
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the SIP process, workers and the web UI read while one of them writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def engine(settings: Settings) -> Engine:
    if settings.database_url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
    return engine_for(settings.database_url)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(engine(settings), expire_on_commit=False)


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session that commits at the end of the block, or rolls back on error."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(settings: Settings) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine(settings)
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Create or upgrade the schema to the newest migration."""
    command.upgrade(alembic_config(settings), revision)


def database_subject(settings: Settings) -> str:
    return f"the database at {hide_password(settings.database_url)}"


def check_database(settings: Settings) -> None:
    """Raise DatabaseUnavailable unless the database answers and its schema is the newest migration's."""
    scripts = ScriptDirectory.from_config(alembic_config(settings))
    try:
        with engine(settings).connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except sql_errors.DBAPIError as exc:
        problem = _connection_problem(exc, settings)
        if problem is None:
            raise
        raise problem from exc
    known = {script.revision for script in scripts.walk_revisions()}
    subject = database_subject(settings)
    if current - known:
        raise DatabaseUnavailable(
            f"{subject} has schema revision {', '.join(sorted(current - known))}, which this Hotline does not "
            f"know (a newer Hotline wrote it): upgrade Hotline, or check {DATABASE_URL_SETTING}",
            subject=subject, reason="unknown schema revision", transient=False)
    if current != set(scripts.get_heads()):
        behind = f" (schema revision {', '.join(sorted(current))})" if current else ""
        raise DatabaseUnavailable(f"{subject} is not initialised{behind}: {INIT_ADVICE}",
                                  subject=subject, reason="not initialised", transient=False)


def database_problem(exc: BaseException, settings: Settings) -> DatabaseUnavailable | None:
    """What a failed database operation means for the user; None when it is not about reaching the database.

    A failed statement that is no connection failure is looked at once more: if the schema is
    missing or old, that is the message ("no such table: calls" means "run hotline init").
    """
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if not isinstance(exc, sql_errors.DBAPIError):
        return None
    problem = _connection_problem(exc, settings)
    if problem is None and isinstance(exc, (sql_errors.OperationalError, sql_errors.ProgrammingError)):
        try:
            check_database(settings)
        except DatabaseUnavailable as found:
            return found
    return problem


def _connection_problem(exc: sql_errors.DBAPIError, settings: Settings) -> DatabaseUnavailable | None:
    said = str(exc.orig)
    subject = database_subject(settings)
    for pattern, advice in REFUSED:
        match = re.search(pattern, said, re.IGNORECASE)
        if match:
            reason = match.group(0).strip()
            return DatabaseUnavailable(f"{subject} cannot be used ({reason}): {advice.format(**match.groupdict())}",
                                       subject=subject, reason=reason, transient=False)
    lowered = said.lower()
    for symptom, reason in NO_ANSWER:
        if symptom in lowered:
            return DatabaseUnavailable(f"{subject} does not answer ({reason}): {START_ADVICE}",
                                       subject=subject, reason=reason, transient=True)
    return None
