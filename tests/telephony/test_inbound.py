"""The inbound call flow with real callers: baresip, sipp and linphone through the local Kamailio."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from collections.abc import Callable

from config import Settings
from hotline.cli import main
from models.call import Call, CallOutcome, CallState, HangupParty
from models.db import session_scope
from models.recording import Recording, RecordingState
from telephony.service import HotlineService
from tests.telephony import peers
from tests.telephony.audio_checks import MATCH_THRESHOLD, assert_on_channel, best_correlation, read_wav
from tests.telephony.conftest import run_sipp

pytestmark = pytest.mark.sip

TARGET = f"sip:1000@{peers.HOST}:{peers.PBX_PORT}"


def ended_calls(settings: Settings) -> list[Call]:
    with session_scope(settings) as session:
        calls = list(session.scalars(select(Call).where(Call.state == CallState.ENDED).order_by(Call.id)))
        for call in calls:
            _ = call.recordings, call.ticket  # loaded before the session closes
        return calls


def wait_ended(settings: Settings, count: int = 1, timeout: float = 20.0) -> list[Call]:
    assert peers.wait_for(lambda: len(ended_calls(settings)) >= count, timeout), "the call did not end"
    return ended_calls(settings)


def test_baresip_speech_is_recorded_on_the_left_channel_with_its_silences(
        service: HotlineService, sip_settings: Settings, caller_speech: Path, tmp_path: Path) -> None:
    caller = peers.baresip_caller(tmp_path / "baresip", caller_speech, TARGET)
    try:
        [call] = wait_ended(sip_settings, timeout=40)  # the end of the file hangs up
    finally:
        caller.stop()
    assert call.outcome is CallOutcome.ABANDONED and call.hangup_by is HangupParty.CUSTOMER
    assert call.caller_id == "+8613800138000" and call.callee == "1000"
    assert call.answered_at is not None and call.queued_at is not None
    assert (call.answered_at - call.ring_at).total_seconds() < sip_settings.sip.answer_delay + 1.0
    assert call.ticket is not None and call.ticket.phone == "+8613800138000"

    recording = call.recording
    assert recording is not None and recording.state is RecordingState.COMPLETE
    path = Path(recording.path)
    assert path.parent.parent.parent.parent == sip_settings.recordings_dir and path.name == f"{call.uid}.wav"
    samples, rate = read_wav(path)
    assert rate == 8000 and samples.shape[1] == 2
    source = read_wav(caller_speech)[0][:, 0]
    offset = assert_on_channel(source, samples, 0).lag  # the caller on the left, and only there
    assert offset <= 0.06, f"speech starts {offset * 1000:.0f} ms late in the recording"
    gaps = [(start - offset, length) for start, length in peers.silent_runs(samples[:, 0])]
    source_gaps = peers.silent_runs(source)
    gap = max(source_gaps, key=lambda g: g[1])
    assert any(abs(start - gap[0]) < 0.1 and abs(length - gap[1]) < 0.1 for start, length in gaps), (gaps, gap)
    # the right channel holds the greeting and the notice Hotline played, and the caller heard them
    welcome = np.concatenate([service_prompt(sip_settings, "greeting"), service_prompt(sip_settings, "recording_notice")])
    recorded, _ = best_correlation(welcome, samples[:, 1], max_lag_s=1.0)
    assert recorded >= MATCH_THRESHOLD, f"greeting not on the right channel ({recorded:.3f})"
    [dump] = (tmp_path / "baresip").glob("dump-*-dec.wav")
    heard, _ = best_correlation(welcome, read_wav(dump)[0][:, 0], max_lag_s=2.0)
    assert heard >= MATCH_THRESHOLD, f"the caller did not hear the greeting ({heard:.3f})"
    assert recording.sha256 and recording.duration == pytest.approx(len(samples) / 8000, abs=0.05)

    listed = CliRunner().invoke(main, ["calls", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["id"] == call.id and row["direction"] == "inbound" and row["caller_id"] == "+8613800138000"
    assert row["outcome"] == "abandoned" and row["recording"] == recording.path
    assert row["ticket"] == call.ticket.number and row["answered_at"] and row["ended_at"]


def test_cancel_before_the_answer_is_logged_as_cancelled(
        start_service: Callable[..., HotlineService], sip_settings: Settings, sipp_dir: Path) -> None:
    start_service(answer_delay=3.0)
    run_sipp("uac_cancel", sipp_dir)
    [call] = wait_ended(sip_settings)
    assert call.outcome is CallOutcome.CANCELLED and call.hangup_by is HangupParty.CUSTOMER
    assert call.answered_at is None and not call.recordings
    assert call.ticket is not None  # a missed call is followed up


def test_offer_without_g711_is_logged_as_rejected(service: HotlineService, sip_settings: Settings,
                                                  sipp_dir: Path) -> None:
    run_sipp("uac_unsupported", sipp_dir)
    [call] = wait_ended(sip_settings)
    assert call.outcome is CallOutcome.REJECTED and call.hangup_by is HangupParty.SYSTEM


def test_silent_caller_is_closed_from_our_side_with_the_closing_prompt(
        start_service: Callable[..., HotlineService], sip_settings: Settings, sipp_dir: Path) -> None:
    start_service(no_audio_timeout=2.0)
    run_sipp("uac_silent_wait_bye", sipp_dir, timeout=30)  # succeeds only if our BYE reached it
    [call] = wait_ended(sip_settings)
    assert call.outcome is CallOutcome.NO_AUDIO and call.hangup_by is HangupParty.SYSTEM
    samples, _ = read_wav(call.recording.path)
    closing = service_prompt(sip_settings, "closing")
    tail = samples[-len(closing) - 8000:, 1]
    correlation, _ = best_correlation(closing, tail, max_lag_s=1.0)
    assert correlation >= MATCH_THRESHOLD, f"closing prompt not at the end of the recording ({correlation:.3f})"


def service_prompt(settings: Settings, name: str) -> np.ndarray:
    from telephony.prompts import PromptLibrary

    return np.frombuffer(getattr(PromptLibrary(settings), name)(), dtype=np.int16)


def test_pcma_caller_is_recorded(service: HotlineService, sip_settings: Settings, sipp_dir: Path,
                                 caller_speech: Path) -> None:
    run_sipp("uac_pcma", sipp_dir, pause_ms=int(audio_seconds(caller_speech) * 1000) + 500)
    [call] = wait_ended(sip_settings)
    assert call.outcome is CallOutcome.ABANDONED
    samples, _ = read_wav(call.recording.path)
    # Where the speech sits, not how fast: the jitter buffer may deepen on a busy machine (bench/ measures latency).
    assert assert_on_channel(read_wav(caller_speech)[0][:, 0], samples, 0).lag <= 0.5


def audio_seconds(path: Path) -> float:
    return len(read_wav(path)[0]) / 8000


def test_kill_9_mid_call_leaves_a_playable_recording_that_is_repaired_at_start(
        start_service: Callable[..., HotlineService], sip_settings: Settings, sipp_dir: Path,
        tmp_path: Path) -> None:
    hotline = peers.Peer([sys.executable, "-m", "hotline", "sip"], tmp_path / "hotline-sip.log")
    process = hotline.process
    assert peers.wait_for(lambda: "hotline sip: numbers" in hotline.output(), 20), hotline.output()[-3000:]
    caller = peers.sipp("uac_bye", sipp_dir, extra=["-d", "20000"])
    try:
        assert peers.wait_for(lambda: live_recording(sip_settings) is not None, 20), hotline.output()[-3000:]
        time.sleep(4.0)
        process.send_signal(signal.SIGKILL)
        process.wait(5)
    finally:
        caller.stop()
        hotline.stop()
    path = Path(live_recording(sip_settings))
    samples, rate = read_wav(path)  # playable as it is, before any repair
    assert rate == 8000 and len(samples) / 8000 >= 2.5
    start_service()  # stops the orphaned Kamailio, repairs the recording (its writer applies the repair)
    [call] = wait_ended(sip_settings)
    assert call.outcome is CallOutcome.FAILED and call.recording.state is RecordingState.REPAIRED
    assert call.recording.duration >= 2.5 and call.ticket is not None


def live_recording(settings: Settings) -> str | None:
    with session_scope(settings) as session:
        return session.scalar(select(Recording.path).where(Recording.state == RecordingState.RECORDING))


def test_linphone_caller_is_answered_and_recorded(service: HotlineService, sip_settings: Settings,
                                                  caller_speech: Path, tmp_path: Path) -> None:
    phone = peers.Linphone(tmp_path / "linphone", caller_speech)
    try:
        phone.call(TARGET)
        assert peers.wait_for(lambda: live_recording(sip_settings) is not None, 15), phone.output()[-2000:]
        time.sleep(audio_seconds(caller_speech) + 2)
        phone.command("terminate")
        [call] = wait_ended(sip_settings)
    finally:
        phone.stop()
    assert call.outcome is CallOutcome.ABANDONED and call.hangup_by is HangupParty.CUSTOMER
    samples, _ = read_wav(call.recording.path)
    assert_on_channel(read_wav(caller_speech)[0][:, 0], samples, 0)
    welcome = np.concatenate([service_prompt(sip_settings, "greeting"), service_prompt(sip_settings, "recording_notice")])
    heard, _ = best_correlation(welcome, read_wav(phone.heard)[0][:, 0], max_lag_s=3.0)
    assert heard >= MATCH_THRESHOLD, f"Linphone did not hear the greeting ({heard:.3f})"


@pytest.mark.slow
def test_a_call_longer_than_a_minute_survives(service: HotlineService, sip_settings: Settings,
                                              sipp_dir: Path) -> None:
    run_sipp("uac_bye", sipp_dir, pause_ms=65000, timeout=100)
    [call] = wait_ended(sip_settings)
    assert call.outcome is CallOutcome.ABANDONED and call.hangup_by is HangupParty.CUSTOMER
    assert (call.ended_at - call.answered_at).total_seconds() >= 65
    assert call.recording.duration >= 65


def test_recording_that_cannot_be_written_raises_an_alarm_and_the_call_goes_on(
        start_service: Callable[..., HotlineService], sip_settings: Settings, sipp_dir: Path,
        tmp_path: Path) -> None:
    from models.alarm import Alarm, AlarmKind

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    sip_settings.recording.directory = str(blocker / "recordings")
    start_service()
    logs = run_sipp("uac_bye", sipp_dir, pause_ms=2000)
    assert "answer " in logs
    [call] = wait_ended(sip_settings)
    assert call.outcome is CallOutcome.ABANDONED and call.answered_at is not None
    assert call.recording.state is RecordingState.FAILED and "not-a-directory" in call.recording.error
    with session_scope(sip_settings) as session:
        alarms = list(session.scalars(select(Alarm).where(Alarm.kind == AlarmKind.RECORDING_FAILED)))
        assert [a.call_id for a in alarms] == [call.id]


# --- the database or the media clock failing under a call ------------------------------------

OUTAGE_SECONDS = 30.0


def calls_through_an_outage(service: HotlineService, settings: Settings, sipp_dir: Path,
                            cut: Callable[[], None], restore: Callable[[], None]) -> list[Call]:
    """Two calls while the database does not answer for 30 s; every row, ticket and job afterwards."""
    cut()
    started = time.monotonic()
    try:
        for _ in range(2):
            logs = run_sipp("uac_bye", sipp_dir, pause_ms=2000)  # fails unless answered and hung up cleanly
            assert "answer " in logs
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
    finally:
        restore()
    assert service.events.flush(60), "the journal did not catch up after the outage"
    calls = ended_calls(settings)
    assert len(calls) == 2
    for call in calls:
        assert (call.answered_at - call.ring_at).total_seconds() < settings.sip.answer_delay + 1.0
        assert call.outcome is CallOutcome.ABANDONED and call.ticket is not None
        assert call.recording is not None and call.recording.state is RecordingState.COMPLETE
        assert call.recording.duration >= 2.0
    from workers.connection import queue

    jobs = {job.args[0] for job in queue(settings, "transcription").get_jobs()}
    assert {call.recording.id for call in calls} <= jobs, "transcription jobs missing after the outage"
    return calls


def test_calls_are_answered_and_recorded_while_the_database_is_locked(
        service: HotlineService, sip_settings: Settings, sipp_dir: Path) -> None:
    import sqlite3

    locker = sqlite3.connect(sip_settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    calls_through_an_outage(service, sip_settings, sipp_dir, cut=lambda: locker.execute("BEGIN EXCLUSIVE"),
                            restore=lambda: (locker.execute("COMMIT"), locker.close()))


def test_calls_are_answered_and_recorded_while_postgresql_is_unreachable(
        postgres_database: str, start_service: Callable[..., HotlineService], sip_settings: Settings,
        sipp_dir: Path) -> None:
    # postgres_database first: its schema is dropped after the service has stopped.
    from models.db import upgrade
    from tests.hotline.test_cli import TcpProxy

    proxy = TcpProxy(5432)
    proxy.start()
    host_url = postgres_database.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    sip_settings.database.url = host_url
    upgrade(sip_settings)
    service = start_service()
    try:
        calls_through_an_outage(service, sip_settings, sipp_dir, cut=proxy.close, restore=proxy.start)
    finally:
        proxy.close()


def test_a_stalled_media_clock_is_written_as_silence_stored_and_alarmed(
        service: HotlineService, sip_settings: Settings, sipp_dir: Path) -> None:
    from models.alarm import Alarm, AlarmKind

    caller = peers.sipp("uac_bye", sipp_dir, extra=["-d", "6000"])
    try:
        assert peers.wait_for(lambda: live_recording(sip_settings) is not None, 15)
        time.sleep(1.0)
        service.media._submit(lambda: time.sleep(2.0))  # the media thread stops for 2 s, as under overload
        assert caller.wait(30) == 0, caller.output()[-2000:]
    finally:
        caller.stop()
    assert service.events.flush(10)
    [call] = wait_ended(sip_settings)
    recording = call.recording
    assert recording.state is RecordingState.COMPLETE
    assert recording.gap_seconds == pytest.approx(2.0, abs=0.2)
    assert recording.longest_gap_seconds == pytest.approx(2.0, abs=0.2)
    talk = (call.ended_at - call.answered_at).total_seconds()
    assert recording.duration == pytest.approx(talk, abs=0.5), "the recording is shorter than the call"
    with session_scope(sip_settings) as session:
        [alarm] = session.scalars(select(Alarm).where(Alarm.kind == AlarmKind.RECORDING_GAP))
        assert alarm.call_id == call.id
