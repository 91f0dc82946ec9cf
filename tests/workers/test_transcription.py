"""Transcription jobs: segments stored, one note per recording, failures on the ticket, retries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from rq import SimpleWorker
from rq.job import JobStatus

from config import Settings
from models.db import session_scope
from models.recording import Recording, RecordingState
from models.transcript import Channel, TranscriptState
from telephony.recorder import StereoWavRecorder
from workers import transcription
from workers.connection import queue, redis_url
from workers.dispatch import enqueue_transcription
from workers.transcription import TranscriptionFailed

CUSTOMER = [(0.5, 2.0, "喂 你好"), (6.0, 9.0, "我 要 投诉 型号 KFR-35GW 的 空调 不满意 要 退货")]
AGENT = [(2.5, 5.5, "您好 这里 是 售后 请问 有 什么 可以 帮 您")]


@pytest.fixture
def quiet_call(tmp_path: Path, helpers) -> Path:  # type: ignore[no-untyped-def]
    """Ten seconds of stereo 8 kHz audio: the scripted recognizer supplies the words."""
    noise = (np.random.default_rng(1).normal(0, 50, (80000, 2))).astype(np.int16)
    return helpers.write_wav(tmp_path / "call.wav", noise)


def test_dialogue_reaches_the_ticket_as_one_note(settings: Settings, quiet_call: Path, make_recording,
                                                 helpers) -> None:  # type: ignore[no-untyped-def]
    recording = make_recording(quiet_call)
    outcome = transcription.transcribe(settings, recording.id, helpers.scripted_model(CUSTOMER, AGENT))

    assert outcome.state == "done"
    [note] = helpers.ticket_notes(settings, recording.id)
    lines = note.text.splitlines()
    assert lines[0].startswith("通话转写 · 时长 00:10")
    assert "关键词: 投诉, 不满意, 退货" in lines[0] and "型号: KFR-35GW" in lines[0]
    assert "客户 60% / 坐席 40%" in lines[0]  # 4.5 s of customer speech, 3 s of agent speech
    assert lines[1:] == ["[00:00] 客户: 喂你好", "[00:02] 坐席: 您好这里是售后请问有什么可以帮您",
                         "[00:06] 客户: 我要投诉型号KFR-35GW的空调不满意要退货"]
    assert note.data["keywords"] == {"投诉": 1, "不满意": 1, "退货": 1}
    assert note.data["transcript_id"] == outcome.transcript_id

    [transcript] = helpers.transcripts(settings, recording.id)
    assert transcript.state is TranscriptState.DONE and transcript.model == "scripted"
    assert [(s.channel, s.start) for s in transcript.segments] == [
        (Channel.CUSTOMER, 0.5), (Channel.AGENT, 2.5), (Channel.CUSTOMER, 6.0)]
    assert all(w["start"] < w["end"] for s in transcript.segments for w in s.words)


def test_a_second_run_writes_nothing(settings: Settings, quiet_call: Path, make_recording, helpers) -> None:  # type: ignore[no-untyped-def]
    recording = make_recording(quiet_call)
    transcription.transcribe(settings, recording.id, helpers.scripted_model(CUSTOMER, AGENT))
    again = transcription.transcribe(settings, recording.id, helpers.scripted_model(CUSTOMER, AGENT))

    assert again.state == "skipped"
    assert len(helpers.ticket_notes(settings, recording.id)) == 1


def test_two_runs_finishing_together_write_one_note(settings: Settings, quiet_call: Path, make_recording,
                                                    helpers) -> None:  # type: ignore[no-untyped-def]
    """A live and a batch transcription of one recording both finish: the first one wins."""
    recording = make_recording(quiet_call)
    live = transcription.start(settings, recording.id, "scripted", "zh", live=True)
    batch = transcription.start(settings, recording.id, "scripted", "zh", live=False)
    from workers.speech import transcribe_file

    results = [transcribe_file(quiet_call, helpers.scripted_model(CUSTOMER, AGENT)) for _ in range(2)]
    won = []
    threads = [threading.Thread(target=lambda t=t, r=r: won.append(transcription.finish(settings, t, r)))
               for t, r in zip((live, batch), results)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(won) == [False, True]
    assert len(helpers.ticket_notes(settings, recording.id)) == 1
    states = sorted(t.state.value for t in helpers.transcripts(settings, recording.id))
    assert states == ["done", "failed"]


def test_no_model_configured_says_so_on_the_ticket_and_keeps_the_recording(
        settings: Settings, quiet_call: Path, make_recording, helpers, caplog) -> None:  # type: ignore[no-untyped-def]
    recording = make_recording(quiet_call)
    with pytest.raises(TranscriptionFailed, match="no speech model configured for language 'zh'"):
        transcription.transcribe(settings, recording.id)

    [note] = helpers.ticket_notes(settings, recording.id)
    assert "通话转写失败" in note.text and "transcription.models.zh" in note.text
    assert f"hotline transcribe --call {recording.call_id}" in note.text
    assert "no speech model configured" in caplog.text
    assert quiet_call.exists()
    assert transcription.pending_recordings(settings, call_id=recording.call_id) == [recording.id]

    # Configured later: the same recording is transcribed, and no longer pending.
    outcome = transcription.transcribe(settings, recording.id, helpers.scripted_model(CUSTOMER, AGENT))
    assert outcome.state == "done"
    assert transcription.pending_recordings(settings, call_id=recording.call_id) == []


def test_live_job_without_model_leaves_the_report_to_the_batch_job(settings: Settings, quiet_call: Path,
                                                                   make_recording, helpers) -> None:  # type: ignore[no-untyped-def]
    recording = make_recording(quiet_call, RecordingState.RECORDING)
    assert transcription.follow(settings, recording.id).state == "skipped"
    assert helpers.ticket_notes(settings, recording.id) == []


@pytest.mark.model
@pytest.mark.parametrize("content", [b"", b"this is a text file, not audio\n" * 50, os.urandom(20000)],
                         ids=["empty", "text", "random"])
def test_bad_input_fails_once_with_a_clear_error(settings: Settings, tmp_path: Path, make_recording, helpers,
                                                 content: bytes) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    recording = make_recording(bad)
    job = enqueue_transcription(settings, recording.id)
    worker = SimpleWorker([queue(settings, "transcription")], connection=queue(settings).connection)
    # The job runs as in production: the configured (real) model, found through the config file.
    Path(settings.config_path).write_text(f'[transcription]\nmodels = {{zh = "{helpers.vosk_model_dir()}"}}\n')

    worker.work(burst=True)

    job.refresh()
    assert job.get_status() == JobStatus.FAILED and job.retries_left == 0
    assert "TranscriptionFailed" in job.latest_result().exc_string
    [note] = helpers.ticket_notes(settings, recording.id)
    assert "通话转写失败" in note.text and "bad.wav" in note.text
    [transcript] = helpers.transcripts(settings, recording.id)
    assert transcript.state is TranscriptState.FAILED and "bad.wav" in transcript.error


def test_live_transcription_follows_the_recorder_and_ends_at_hang_up(settings: Settings, tmp_path: Path,
                                                                     make_recording, helpers) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "live.wav"
    recorder = StereoWavRecorder(path, 8000)
    recording = make_recording(path, RecordingState.RECORDING)
    outcome: list[transcription.Outcome] = []
    follower = threading.Thread(target=lambda: outcome.append(transcription.follow(
        settings, recording.id, helpers.scripted_model(CUSTOMER, AGENT), poll=0.05)))
    follower.start()
    frame = np.zeros(160, dtype=np.int16).tobytes()
    for _ in range(500):  # ten seconds of 20 ms frames, faster than real time
        recorder.write(frame, frame)
        time.sleep(0.001)
    recorder.close()
    with session_scope(settings) as session:
        session.get_one(Recording, recording.id).state = RecordingState.COMPLETE
    follower.join(timeout=30)

    assert outcome[0].state == "done"
    [note] = helpers.ticket_notes(settings, recording.id)
    assert note.data["live"] is True and note.data["duration"] == 10.0
    assert "[00:06] 客户: 我要投诉" in note.text
    # The batch job enqueued at hang-up finds the work done.
    assert transcription.transcribe(settings, recording.id, helpers.scripted_model(CUSTOMER, AGENT)).state == "skipped"


def test_live_job_skips_a_recording_already_closed(settings: Settings, quiet_call: Path, make_recording,
                                                   helpers) -> None:  # type: ignore[no-untyped-def]
    recording = make_recording(quiet_call)
    outcome = transcription.follow(settings, recording.id, helpers.scripted_model(CUSTOMER, AGENT))
    assert outcome.state == "skipped" and "closed" in outcome.detail


@pytest.mark.model
@pytest.mark.slow
def test_live_and_batch_give_the_same_segments(model_settings: Settings, real_model, dialogue_wav: Path,
                                               tmp_path: Path, make_recording) -> None:  # type: ignore[no-untyped-def]
    import wave

    from workers.speech import transcribe_file, transcribe_growing

    batch = transcribe_file(dialogue_wav, real_model)
    with wave.open(str(dialogue_wav)) as source:
        samples = np.frombuffer(source.readframes(source.getnframes()), "<i2").reshape(-1, 2)
    path = tmp_path / "growing.wav"
    recorder = StereoWavRecorder(path, 8000)
    closed = threading.Event()

    def telephony() -> None:
        for i in range(0, len(samples), 160):
            recorder.write(samples[i:i + 160, 0].tobytes(), samples[i:i + 160, 1].tobytes())
            if i % 1600 == 0:
                time.sleep(0.002)
        recorder.close()
        closed.set()

    writer = threading.Thread(target=telephony)
    writer.start()
    live = transcribe_growing(path, real_model, lambda: not closed.is_set(), poll=0.05)
    writer.join()

    assert batch.segments, "the model heard nothing in the dialogue"
    assert live.segments == batch.segments
    assert live.duration == batch.duration


@pytest.mark.model
@pytest.mark.slow
def test_worker_killed_mid_job_is_retried_and_writes_the_note_once(
        model_settings: Settings, tmp_path: Path, make_recording, helpers, speech_audio) -> None:  # type: ignore[no-untyped-def]
    """A real `rq worker` transcribes with the real model; its work-horse is SIGKILLed mid-job."""
    long_call = np.concatenate([speech_audio["hello"], helpers.silence(0.3)] * 12)
    path = helpers.write_wav(tmp_path / "long.wav", helpers.stereo(long_call, long_call[::-1].copy()))
    recording = make_recording(path)
    job = enqueue_transcription(model_settings, recording.id)
    env = {**os.environ, "PYTHONPATH": str(Path(transcription.__file__).parents[1])}
    worker = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker", "transcription", "--with-scheduler", "--url",
         redis_url(model_settings), "--worker-class", "workers.transcription.TranscriptionWorker"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        horse = wait_for_horse(worker.pid, model_settings, recording.id)
        os.kill(horse, signal.SIGKILL)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and job.get_status(refresh=True) != JobStatus.FINISHED:
            time.sleep(0.5)
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED, job.get_status()
        assert job.retries_left == 2  # one retry used by the kill
    finally:
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=30)[0]

    assert len(helpers.ticket_notes(model_settings, recording.id)) == 1
    states = [t.state for t in helpers.transcripts(model_settings, recording.id)]
    assert states == [TranscriptState.DONE]  # the killed attempt's row was reused
    assert output.count("loaded Vosk model") == 1, output  # in the worker, before forking: never again


def wait_for_horse(worker_pid: int, settings: Settings, recording_id: int, timeout: float = 120) -> int:
    """The work-horse's pid once its transcript is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(worker_pid).children()
        with session_scope(settings) as session:
            running = any(t.state is TranscriptState.RUNNING
                          for t in session.get_one(Recording, recording_id).transcripts)
        if children and running:
            time.sleep(1.0)  # well inside the recognition
            # The newest child: the scheduler process was forked when the worker started.
            return max(children, key=lambda child: child.create_time()).pid
        time.sleep(0.1)
    raise AssertionError("the worker never started the job")


def test_worker_reports_a_missing_model_in_one_line_without_a_traceback(
        settings: Settings, quiet_call: Path, make_recording) -> None:  # type: ignore[no-untyped-def]
    from workers.connection import redis_url
    from workers.dispatch import enqueue_transcription

    recording = make_recording(quiet_call)
    job = enqueue_transcription(settings, recording.id)
    worker = subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "transcription", "--burst", "--url", redis_url(settings),
         "--worker-class", "workers.transcription.TranscriptionWorker"],
        capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0
    assert "no speech model configured for language 'zh'" in worker.stderr
    assert "Traceback" not in worker.stderr
    job.refresh()
    assert job.is_failed and job.retries_left == 0


def test_model_language_comes_from_the_queue_then_the_customer_then_the_default(
        settings: Settings, quiet_call: Path, make_recording) -> None:  # type: ignore[no-untyped-def]
    from models.queue import Queue
    from models.db import session_scope
    from models.recording import Recording

    recording = make_recording(quiet_call)
    with session_scope(settings) as session:
        row = session.get_one(Recording, recording.id)
        assert transcription.language_of(settings, row) == "zh"
        row.call.customer.language = "yue"
        assert transcription.language_of(settings, row) == "yue"
        row.call.queue = Queue(name="english", language="en")
        assert transcription.language_of(settings, row) == "en"
