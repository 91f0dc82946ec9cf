"""``hotline run``: every service as a child process, restarted if it dies, stopped together.

The embedded Redis is started here and handed to the children as REDIS_URL, so all of them
share one server that lives exactly as long as the whole system.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from config import Settings
from workers.connection import redis_url

log = logging.getLogger(__name__)

RESTART_DELAY = 2.0
STOP_TIMEOUT = 10.0


def _start(service: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.info("starting %s", " ".join(service))
    # A session of its own: what a service forks (RQ's scheduler) is signalled with it, never orphaned.
    return subprocess.Popen([sys.executable, "-m", "hotline", *service], env=env, start_new_session=True)


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except ProcessLookupError:
        pass


def run_services(services: Sequence[str | Sequence[str]], settings: Settings) -> int:
    """Run the services until Ctrl-C or SIGTERM; returns the exit code.

    A service is a ``hotline`` subcommand: a name ("web") or its arguments (["worker", "--queue", "live"]).
    """
    services = [[service] if isinstance(service, str) else list(service) for service in services]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s hotline %(message)s")
    env = {**os.environ, "REDIS_URL": redis_url(settings), "HOTLINE_HOME": str(settings.home),
           "HOTLINE_CONFIG": str(settings.config_path)}
    children = {index: _start(service, env) for index, service in enumerate(services)}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"Hotline is running: web UI on http://{settings.web.host}:{settings.web.port}/ (Ctrl-C stops)",
          flush=True)
    died_at: dict[int, float] = {}
    while not stopping:
        time.sleep(0.5)
        for index, child in list(children.items()):
            if child.poll() is None:
                continue
            # A crashed service comes back after a pause, so a crash loop cannot spin the CPU.
            if index not in died_at:
                _signal_group(child, signal.SIGKILL)
                log.warning("%s exited with code %s; restarting in %.0f s",
                            " ".join(services[index]), child.returncode, RESTART_DELAY)
                died_at[index] = time.monotonic()
            elif time.monotonic() - died_at[index] >= RESTART_DELAY and not stopping:
                del died_at[index]
                children[index] = _start(services[index], env)
    _stop_all(children)
    return 0


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
