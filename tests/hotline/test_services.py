"""``hotline worker`` and ``hotline scheduler`` as the processes a user starts.

The worker runs a real job enqueued through ``workers.dispatch``; the scheduler moves a job due
later onto its queue when it is due. Both on the embedded Redis under HOTLINE_HOME (each
process reaches the same server through it), or on HOTLINE_TEST_REDIS_URL when set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import wave
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from rq.job import JobStatus
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler

from config import Settings
from models.calllog import close_recording, log_inbound, open_recording, ticket_for_call
from models.db import session_scope
from models.ticket import EventKind, Ticket
from tests.telephony.peers import wait_for
from workers import dispatch
from workers.connection import queue, redis_connection

pytestmark = pytest.mark.timeout(120)

STOP_TIMEOUT = 20.0


class Service:
    """``hotline <args>`` in a session of its own, as a user runs it from a terminal."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "hotline", *args], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=os.environ.copy(), start_new_session=True)

    def group(self) -> list[psutil.Process]:
        """Every live process of the service's session: it and what it forked."""
        found = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == self.process.pid and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue
        return found

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM to the service, as systemd or the supervisor sends it; its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


@pytest.fixture
def start(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start_service(*args: str) -> Service:
        service = Service(list(args), tmp_path / f"{'-'.join(args)}.log")
        started.append(service)
        return service

    yield start_service
    for service in started:
        service.kill()


def closed_recording(settings: Settings, tmp_path: Path) -> tuple[int, int]:
    """A finished call with its ticket and a sealed one-second recording: (recording id, ticket id)."""
    path = tmp_path / "call.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2), out.setsampwidth(2), out.setframerate(8000), out.writeframes(bytes(32000))
    with session_scope(settings) as session:
        call = log_inbound(session, settings, caller="13800138000", callee="1000", sip_call_id="worker-test")
        ticket = ticket_for_call(session, settings, call)
        recording = open_recording(session, settings, call, str(path))
        close_recording(session, settings, recording, duration=1.0, sha256="0" * 64, size_bytes=32044)
        return recording.id, ticket.id


def transcript_notes(settings: Settings, ticket_id: int) -> list[str]:
    with session_scope(settings) as session:
        return [e.text for e in session.get_one(Ticket, ticket_id).events if e.kind is EventKind.TRANSCRIPT]


def test_worker_runs_a_dispatched_job_and_the_missing_model_is_on_the_ticket(
        settings: Settings, start: Callable[..., Service], tmp_path: Path) -> None:
    recording_id, ticket_id = closed_recording(settings, tmp_path)
    job = dispatch.enqueue_transcription(settings, recording_id)  # no model configured
    worker = start("worker", "--queue", "transcription")

    assert wait_for(lambda: job.get_status(refresh=True) == JobStatus.FAILED, 60), worker.output()[-3000:]
    [note] = transcript_notes(settings, ticket_id)
    assert "no speech model configured for language 'zh'" in note and "transcription.models.zh" in note
    assert "hotline transcribe --call" in note
    # The configuration will not fix itself: not retried, however many retries the job had.
    assert job.id not in ScheduledJobRegistry(queue=queue(settings, "transcription")).get_job_ids()
    assert queue(settings, "transcription").count == 0
    assert wait_for(lambda: "the ticket says so; not retried" in worker.output(), 10), worker.output()[-3000:]
    assert "Traceback" not in worker.output()

    forked = worker.group()
    assert len(forked) >= 2, "no RQ scheduler beside the worker"  # `hotline worker` runs one for enqueue_at jobs
    assert worker.stop() == 0
    assert wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in forked), 10), \
        "the worker's scheduler outlived it"


def test_scheduler_moves_a_job_onto_its_queue_when_it_is_due(settings: Settings,
                                                             start: Callable[..., Service]) -> None:
    scheduler = start("scheduler")
    connection = redis_connection(settings)
    assert wait_for(lambda: connection.exists(RQScheduler.get_locking_key("default")), 30), scheduler.output()[-3000:]

    default = queue(settings, "default")
    due = datetime.now(UTC) + timedelta(seconds=3)
    job = default.enqueue_at(due, "workers.transcription.transcribe_recording", 1)
    assert job.get_status() == JobStatus.SCHEDULED and default.count == 0

    assert wait_for(lambda: job.id in default.job_ids, 3 + 5), scheduler.output()[-3000:]
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED
    # RQ keeps the time in whole seconds: never more than a second early.
    assert job.enqueued_at.replace(tzinfo=UTC) >= due - timedelta(seconds=1)
    assert scheduler.stop() == 0
