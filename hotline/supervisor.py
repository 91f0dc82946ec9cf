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


def _start(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.info("starting %s", name)
    return subprocess.Popen([sys.executable, "-m", "hotline", name], env=env)


def run_services(names: Sequence[str], settings: Settings) -> int:
    """Run the named services until Ctrl-C (or SIGTERM); returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s hotline %(message)s")
    env = {**os.environ, "REDIS_URL": redis_url(settings), "HOTLINE_HOME": str(settings.home),
           "HOTLINE_CONFIG": str(settings.config_path)}
    children = {name: _start(name, env) for name in names}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"Hotline is running: web UI on http://{settings.web.host}:{settings.web.port}/ (Ctrl-C stops)",
          flush=True)
    while not stopping:
        time.sleep(0.5)
        for name, child in list(children.items()):
            if child.poll() is not None and not stopping:
                log.warning("%s exited with code %s; restarting in %.0f s", name, child.returncode, RESTART_DELAY)
                time.sleep(RESTART_DELAY)
                children[name] = _start(name, env)
    _stop_all(children)
    return 0


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, child in children.items():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", name)
            child.kill()
            child.wait()
    log.info("all services stopped")
