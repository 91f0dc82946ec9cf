"""The inbound call flow with real callers: baresip, sipp and linphone through the local Kamailio."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from config import Settings
from models.call import Call, CallOutcome, CallState, HangupParty
from models.db import session_scope
from models.recording import Recording, RecordingState
from telephony.service import HotlineService
from tests.telephony import peers
from tests.telephony.audio_checks import MATCH_THRESHOLD, best_correlation, read_wav

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
    assert path.parent.parent.parent.parent == sip_settings.recordings_dir and path.name == f"{call.id}.wav"
    samples, rate = read_wav(path)
    assert rate == 8000 and samples.shape[1] == 2
    source = read_wav(caller_speech)[0][:, 0]
    correlation, offset = best_correlation(source, samples[:, 0])
    assert correlation >= MATCH_THRESHOLD, f"left channel does not match the caller's speech ({correlation:.3f})"
    assert offset <= 0.06, f"speech starts {offset * 1000:.0f} ms late in the recording"
    gaps = [(start - offset, length) for start, length in peers.silent_runs(samples[:, 0])]
    source_gaps = peers.silent_runs(source)
    gap = max(source_gaps, key=lambda g: g[1])
    assert any(abs(start - gap[0]) < 0.1 and abs(length - gap[1]) < 0.1 for start, length in gaps), (gaps, gap)
    # the right channel holds the greeting and the notice Hotline played
    assert abs(samples[:, 1].astype(float)).max() > 1000
    assert recording.sha256 and recording.duration == pytest.approx(len(samples) / 8000, abs=0.05)
