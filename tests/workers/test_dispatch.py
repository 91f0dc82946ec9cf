"""Enqueuing transcription jobs: the right function, queue, retries and timeouts."""

from __future__ import annotations

from config import Settings
from workers import dispatch
from workers.connection import queue


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


def test_closing_a_recording_enqueues_its_transcription(settings: Settings) -> None:
    from models.calllog import close_recording, log_inbound, open_recording
    from models.db import session_scope

    with session_scope(settings) as session:
        call = log_inbound(session, settings, caller="13800138000", callee="1000", sip_call_id="x")
        recording = open_recording(session, settings, call, "/tmp/none.wav")
        close_recording(session, settings, recording, duration=1.0, sha256="0" * 64, size_bytes=44)
    [job] = queue(settings, "transcription").jobs
    assert job.func_name == "workers.transcription.transcribe_recording" and job.args == (recording.id,)
