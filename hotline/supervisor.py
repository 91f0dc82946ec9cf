"""``hotline run``: every service as a child process, restarted if it dies, stopped together.

The embedded Redis is started here and handed to the children as REDIS_URL, so all of them
share one server that lives exactly as long as the whole system.

The supervisor upgrades the schema before it starts the services that use the database. The SIP
endpoint needs no database to answer calls, so it starts at once; while the database does not
answer, the others wait (one log line, a try every ``database.retry_seconds``) and start when it
does. A service that exits with code 2 found something waiting cannot fix (its message is in the
log above): it is not restarted, and once no service is left the supervisor exits 2.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from hotline.commands.services import Patience
from models.db import DatabaseUnavailable, database_problem, upgrade
from workers.connection import redis_url

log = logging.getLogger(__name__)

RESTART_DELAY = 2.0
STOP_TIMEOUT = 10.0
TICK = 0.5
EXIT_CANNOT_START = 2
# Services that start before the database answers.
WITHOUT_DATABASE = ("sip",)


def _start(service: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.info("starting %s", " ".join(service))
    # A session of its own: what a service forks (RQ's scheduler) is signalled with it, never orphaned.
    return subprocess.Popen([sys.executable, "-m", "hotline", *service], env=env, start_new_session=True)


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass


class SchemaGate:
    """Upgrades the schema once the database answers; until then ``open`` says no and the wait is logged."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.patience = Patience(settings)
        self.next_try = 0.0
        self.is_open = False

    def open(self) -> bool:
        """Whether the schema is up to date; tries (again) when the retry interval has passed.

        Raises DatabaseUnavailable when waiting cannot help (a refused login, say).
        """
        if self.is_open or time.monotonic() < self.next_try:
            return self.is_open
        try:
            upgrade(self.settings)
        except SQLAlchemyError as exc:
            problem = database_problem(exc, self.settings)
            if problem is None:
                raise
            self.patience.failed(problem)
            self.next_try = time.monotonic() + self.patience.retry_seconds
            return False
        self.patience.succeeded()
        self.is_open = True
        return True


def run_services(services: Sequence[str | Sequence[str]], settings: Settings) -> int:
    """Run the services until Ctrl-C or SIGTERM; returns the exit code.

    A service is a ``hotline`` subcommand: a name ("web") or its arguments (["worker", "--queue", "live"]).
    """
    services = [[service] if isinstance(service, str) else list(service) for service in services]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s hotline %(message)s")
    env = {**os.environ, "REDIS_URL": redis_url(settings), "HOTLINE_HOME": str(settings.home),
           "HOTLINE_CONFIG": str(settings.config_path)}
    gate = SchemaGate(settings)
    try:
        gate.open()
    except DatabaseUnavailable as problem:
        log.error("%s", problem)
        return EXIT_CANNOT_START
    children: dict[int, subprocess.Popen[bytes]] = {}
    pending = list(range(len(services)))
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"Hotline is running: web UI on http://{settings.web.host}:{settings.web.port}/ (Ctrl-C stops)",
          flush=True)
    died_at: dict[int, float] = {}
    code = 0
    while not stopping:
        try:
            schema_ready = gate.open()
        except DatabaseUnavailable as problem:
            log.error("%s", problem)
            code = EXIT_CANNOT_START
            break
        for index in [i for i in pending if schema_ready or services[i][0] in WITHOUT_DATABASE]:
            pending.remove(index)
            children[index] = _start(services[index], env)
        time.sleep(TICK)
        _supervise(services, children, died_at, env, stopping)
        if not children and not pending:
            log.error("no service is left running")
            code = EXIT_CANNOT_START
            break
    _stop_all(children)
    return code


def _supervise(services: list[list[str]], children: dict[int, subprocess.Popen[bytes]], died_at: dict[int, float],
               env: dict[str, str], stopping: bool) -> None:
    """Restart dead services after a pause; forget those that cannot start (exit code 2)."""
    for index, child in list(children.items()):
        if child.poll() is None:
            continue
        name = " ".join(services[index])
        if child.returncode == EXIT_CANNOT_START:
            _signal_group(child, signal.SIGKILL)
            log.error("%s cannot start (exit code 2, its message is above): not restarted; fix the cause, "
                      "then restart hotline run", name)
            del children[index]
        # A crashed service comes back after a pause, so a crash loop cannot spin the CPU.
        elif index not in died_at:
            _signal_group(child, signal.SIGKILL)
            log.warning("%s exited with code %s; restarting in %.0f s", name, child.returncode, RESTART_DELAY)
            died_at[index] = time.monotonic()
        elif time.monotonic() - died_at[index] >= RESTART_DELAY and not stopping:
            del died_at[index]
            children[index] = _start(services[index], env)


def _stop_all(children: dict[int, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", " ".join(child.args[3:]))
            _signal_group(child, signal.SIGKILL)
            child.wait()
    log.info("all services stopped")
