"""`hotline run`'s supervisor: every service starts, a dead one comes back, Ctrl-C stops all.

The system runs on the telephony tests' ports (PBX 5160, Hotline 5162), so a sipp caller
(``tests/telephony``) can call it; like every SIP test, run it under the shared lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from config import Settings
from models.call import Call
from models.db import session_scope
from tests.telephony.conftest import SIP_TOML, caller_speech, run_sipp, sipp_dir  # noqa: F401 (fixtures)
from tests.telephony.peers import wait_for

pytestmark = pytest.mark.sip

WEB_PORT = 18080
SERVICES = {"web", "sip", "worker", "live", "scheduler"}
RUN_TOML = SIP_TOML + f"""
[web]
port = {WEB_PORT}

[transcription]
live_workers = 1
"""


def web_answers() -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{WEB_PORT}/healthz", timeout=1).status == 200
    except OSError:
        return False


def children(pid: int) -> dict[str, psutil.Process]:
    """Live child services by name (a killed one lingers as a zombie until reaped, then is gone)."""
    alive = {}
    for process in psutil.Process(pid).children():
        try:
            command = process.cmdline()
        except psutil.NoSuchProcess:  # a zombie (ZombieProcess), or reaped since the listing
            continue
        if command and command[-1] in SERVICES:
            alive[command[-1]] = process
    return alive


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def left_behind(home: Path, sessions: set[int]) -> list[str]:
    """Processes still in a service's session or working in the installation's home (Kamailio's config)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            command = " ".join(process.info["cmdline"] or [])
            if process.status() != psutil.STATUS_ZOMBIE and (os.getsid(process.pid) in sessions
                                                             or str(home) in command):
                found.append(f"{process.pid} {command}")
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


def scheduling_pids(scheduler: psutil.Process) -> set[int]:
    """Pids of the RQ schedulers holding the queues' scheduler locks (0: a queue without one)."""
    from redis import Redis
    from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler

    from workers.connection import LIVE_QUEUE, QUEUE_NAMES

    # A plain client on the URL the supervisor gave its services, closed again: an embedded
    # server with a client left would outlive the system.
    redis = Redis.from_url(scheduler.environ()["REDIS_URL"], decode_responses=True)
    try:
        names = {redis.get(RQScheduler.get_locking_key(queue)) for queue in (*QUEUE_NAMES, LIVE_QUEUE)}
        return {int(redis.hget(SCHEDULER_KEY_TEMPLATE % name, "pid") or 0) for name in names}
    finally:
        redis.close()


def ctrl_c(supervisor: subprocess.Popen[bytes]) -> int:
    """What Ctrl-C in the terminal does: SIGINT to the foreground process group; the exit code."""
    os.killpg(supervisor.pid, signal.SIGINT)
    return supervisor.wait(40)


def answered_calls(settings: Settings) -> list[Call]:
    with session_scope(settings) as session:
        return list(session.scalars(select(Call).where(Call.answered_at.is_not(None))))


@pytest.fixture
def supervisor(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "hotline.toml").write_text(RUN_TOML, encoding="utf-8")
    with open(tmp_path / "hotline-run.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "hotline", "run"], env=os.environ.copy(), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    yield process
    if process.poll() is None:
        leftovers = psutil.Process(process.pid).children(recursive=True)
        process.kill()
        for child in leftovers:
            child.kill()
        process.wait()


def system_output(tmp_path: Path) -> str:
    return (tmp_path / "hotline-run.log").read_text(errors="replace")[-4000:]


def test_services_start_restart_and_stop_together(supervisor, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert wait_for(web_answers, 30), f"web UI did not come up\n{system_output(tmp_path)}"
    assert wait_for(lambda: set(children(supervisor.pid)) == SERVICES, 15), children(supervisor.pid)
    worker = children(supervisor.pid)["worker"]
    worker.kill()

    def restarted() -> bool:
        now = children(supervisor.pid)  # one look: the worker may come and go between two
        return "worker" in now and now["worker"].pid != worker.pid

    assert wait_for(restarted, 15), "worker not restarted"
    pids = [p.pid for p in children(supervisor.pid).values()]
    assert ctrl_c(supervisor) == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert not web_answers()


def test_sip_answers_the_scheduler_runs_and_ctrl_c_leaves_nothing_behind(
        supervisor, settings: Settings, sipp_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    assert wait_for(lambda: set(children(supervisor.pid)) == SERVICES, 30), system_output(tmp_path)
    services = children(supervisor.pid)
    sip = services["sip"]
    assert wait_for(lambda: any(p.name() == "kamailio" for p in running(sip.children(recursive=True))), 20), \
        "`hotline sip` started no local PBX"
    # A caller through the PBX on its port is answered by `hotline sip` (sipp fails unless answered).
    assert wait_for(lambda: "hotline sip: numbers" in system_output(tmp_path), 30), system_output(tmp_path)
    run_sipp("uac_bye", sipp_dir, pause_ms=1000)
    assert wait_for(lambda: answered_calls(settings), 20), "the call was not logged as answered"
    # Every queue's enqueue_at jobs have a scheduler of this system: the scheduler service, or the
    # one a worker forked if that worker took the queue's lock first.
    scheduler = services["scheduler"]
    ours = {p.pid for p in running(psutil.Process(supervisor.pid).children(recursive=True))}

    def scheduled_by_us() -> bool:
        pids = scheduling_pids(scheduler)
        return 0 not in pids and pids <= ours

    assert wait_for(scheduled_by_us, 30), (scheduling_pids(scheduler), ours)
    assert children(supervisor.pid)["scheduler"].pid == scheduler.pid, "the scheduler service restarted"
    assert children(supervisor.pid)["sip"].pid == sip.pid, "`hotline sip` restarted"

    descendants = psutil.Process(supervisor.pid).children(recursive=True)
    sessions = {p.pid for p in services.values()}
    assert ctrl_c(supervisor) == 0
    assert running(descendants) == []
    assert left_behind(settings.home, sessions) == []
