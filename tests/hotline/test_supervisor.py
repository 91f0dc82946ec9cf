"""`hotline run`'s supervisor: services start together, a dead one comes back, Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

WEB_PORT = 18080


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def web_answers() -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/healthz", timeout=1).status == 200
    except OSError:
        return False


def children(pid: int) -> dict[str, psutil.Process]:
    """Live child services by name (a killed one lingers as a zombie until reaped)."""
    alive = {}
    for process in psutil.Process(pid).children():
        try:
            command = process.cmdline()
        except psutil.ZombieProcess:
            continue
        if command and command[-1] in ("web", "worker", "live"):
            alive[command[-1]] = process
    return alive


@pytest.fixture
def supervisor(settings, tmp_path):
    (tmp_path / "hotline.toml").write_text(f"[web]\nport = {WEB_PORT}\n", encoding="utf-8")
    script = ("from config import load_settings; from hotline.supervisor import run_services; "
              "import sys; sys.exit(run_services([['web'], ['worker'], ['worker', '--queue', 'live']], load_settings()))")
    process = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    yield process
    if process.poll() is None:
        leftovers = psutil.Process(process.pid).children(recursive=True)
        process.kill()
        for child in leftovers:
            child.kill()


def test_services_start_restart_and_stop_together(supervisor):
    assert wait_for(web_answers, 30), "web UI did not come up"
    assert wait_for(lambda: set(children(supervisor.pid)) == {"web", "worker", "live"}, 10)
    worker = children(supervisor.pid)["worker"]
    worker.kill()
    assert wait_for(lambda: "worker" in children(supervisor.pid)
                    and children(supervisor.pid)["worker"].pid != worker.pid, 15), "worker not restarted"
    pids = [p.pid for p in children(supervisor.pid).values()]
    supervisor.send_signal(signal.SIGINT)
    assert supervisor.wait(30) == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert not web_answers()


def test_nothing_a_service_started_outlives_the_system(supervisor):
    def worker_has_forked() -> bool:
        worker = children(supervisor.pid).get("worker")
        return worker is not None and len(worker.children()) > 0

    assert wait_for(worker_has_forked, 30), "no RQ scheduler process"
    descendants = psutil.Process(supervisor.pid).children(recursive=True)
    supervisor.send_signal(signal.SIGINT)
    assert supervisor.wait(30) == 0
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in descendants)
