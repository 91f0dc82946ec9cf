"""Enqueuing transcription jobs: the right function, queue, retries and timeouts; on real calls, when."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from config import Settings
from models.call import Call, CallOutcome
from models.db import session_scope
from models.recording import Recording, RecordingState
from telephony.service import HotlineService
from tests.telephony import peers
from tests.telephony.conftest import run_sipp
from workers import dispatch
from workers.connection import LIVE_QUEUE, queue


def test_batch_transcription_is_retried_a_bounded_number_of_times(settings: Settings) -> None:
    job = dispatch.enqueue_transcription(settings, 42)
    assert job.func_name == "workers.transcription.transcribe_recording" and job.args == (42,)
    assert job.origin == "transcription"
    assert job.retries_left == 3 and job.retry_intervals == [5, 30, 120]
    assert job.timeout == dispatch.TRANSCRIPTION_TIMEOUT
    assert job.id in queue(settings, "transcription").job_ids


def test_live_transcription_is_not_retried(settings: Settings) -> None:
    job = dispatch.enqueue_live_transcription(settings, 42)
    assert job.func_name == "workers.transcription.transcribe_live" and job.args == (42,)
    assert job.retries_left is None
    assert job.timeout == dispatch.LIVE_TIMEOUT


def test_live_transcription_follows_the_streaming_setting(settings: Settings) -> None:
    settings.transcription.streaming = False
    assert dispatch.enqueue_live_transcription(settings, 42) is None
    assert queue(settings, "transcription").count == 0


# --- On real calls: sipp → the local Kamailio → `hotline sip` (run these under the SIP lock) ---

def recording_ids(settings: Settings, state: RecordingState) -> list[int]:
    with session_scope(settings) as session:
        return list(session.scalars(select(Recording.id).where(Recording.state == state)))


def jobs_for(settings: Settings, queue_name: str, recording_id: int) -> list[str]:
    return [job.func_name for job in queue(settings, queue_name).jobs if job.args == (recording_id,)]


@pytest.mark.sip
def test_a_call_enqueues_live_transcription_when_its_recording_opens(
        call_settings: Settings, service: HotlineService, sipp_dir: Path) -> None:
    caller = peers.sipp("uac_bye", sipp_dir, extra=["-d", "4000"])
    try:
        assert peers.wait_for(lambda: recording_ids(call_settings, RecordingState.RECORDING), 15), caller.output()
        [recording_id] = recording_ids(call_settings, RecordingState.RECORDING)
        assert peers.wait_for(lambda: jobs_for(call_settings, LIVE_QUEUE, recording_id), 5)
        assert jobs_for(call_settings, LIVE_QUEUE, recording_id) == ["workers.transcription.transcribe_live"]
        assert caller.running(), "the call ended before its live transcription was queued"
        assert queue(call_settings, "transcription").count == 0  # the batch job follows the hang-up
        assert caller.wait(20) == 0, caller.output()
    finally:
        caller.stop()
    assert peers.wait_for(lambda: jobs_for(call_settings, "transcription", recording_id), 10)
    assert jobs_for(call_settings, "transcription", recording_id) == ["workers.transcription.transcribe_recording"]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.sip
def test_redis_down_never_breaks_a_call_and_its_jobs_follow_when_it_is_back(
        call_settings: Settings, start_service: Callable[..., HotlineService], sipp_dir: Path) -> None:
    redis_url = call_settings.redis.url
    call_settings.redis.url = f"redis://127.0.0.1:{closed_port()}"
    down = HotlineService(call_settings)
    try:
        assert down.start(register_timeout=5.0)
        logs = run_sipp("uac_bye", sipp_dir, pause_ms=2000)  # fails unless answered and hung up cleanly
        assert "answer " in logs
        assert peers.wait_for(lambda: recording_ids(call_settings, RecordingState.COMPLETE), 15)
    finally:
        down.stop()
    with session_scope(call_settings) as session:
        call = session.scalars(select(Call)).one()
        assert call.answered_at is not None and call.outcome is CallOutcome.ABANDONED
        assert call.recording.state is RecordingState.COMPLETE and call.recording.duration >= 2.0
        assert call.ticket is not None
        recording_id = call.recording.id

    call_settings.redis.url = redis_url
    start_service()  # the next `hotline sip` finds the jobs the outage held back
    assert peers.wait_for(lambda: jobs_for(call_settings, "transcription", recording_id), 15), \
        "the transcription job was lost while Redis was down"
    assert jobs_for(call_settings, LIVE_QUEUE, recording_id) == ["workers.transcription.transcribe_live"]
