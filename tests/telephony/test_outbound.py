"""The outbound call flow with real softphones: baresip and Linphone registered at the local Kamailio."""

from __future__ import annotations

import time


from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from config import Settings
from models.accounts import add_user
from models.call import Call, CallDirection, CallOutcome, HangupParty
from models.db import session_scope
from models.recording import RecordingState
from models.user import Role
from telephony.outbound import OutboundCall
from telephony.service import HotlineService
from tests.telephony import peers
from tests.telephony.audio_checks import MATCH_THRESHOLD, best_correlation, read_wav
from tests.telephony.test_sip import read_pcm

pytestmark = pytest.mark.sip

AGENT_PASSWORD = "agent-secret"


@pytest.fixture
def agents(sip_settings: Settings) -> None:
    """Extensions 2000 (baresip) and 2001 (Linphone) known to the local PBX."""
    with session_scope(sip_settings) as session:
        for name, extension in (("zhang", "2000"), ("li", "2001")):
            add_user(session, name, Role.AGENT, AGENT_PASSWORD, realm=sip_settings.sip.realm, extension=extension)


@pytest.fixture
def dialler(agents: None, start_service: Callable[..., HotlineService]) -> HotlineService:
    return start_service()


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[Callable[..., peers.Peer]]:
    started: list[peers.Peer] = []

    def start(source: Path, **options: object) -> peers.Peer:
        phone = peers.baresip_callee(tmp_path / "baresip", source, password=AGENT_PASSWORD, **options)  # type: ignore[arg-type]
        started.append(phone)
        assert peers.wait_for(lambda: "200 ok" in phone.output().lower() or "registered successfully"
                              in phone.output().lower(), 10), phone.output()[-2000:]
        return phone

    yield start
    for phone in started:
        phone.stop()


def logged_call(settings: Settings, uid: str) -> Call:
    with session_scope(settings) as session:
        call = session.scalar(select(Call).where(Call.uid == uid))
        assert call is not None, "the call was not logged"
        _ = call.recordings
        return call


def finished(service: HotlineService, call: OutboundCall, timeout: float = 15) -> Call:
    assert call.wait_done(timeout), "the call did not end"
    assert service.events.flush(10), "the call log was not written"
    return logged_call(service.settings, call.uid)


def test_answered_call_hears_us_and_is_recorded_both_ways(dialler: HotlineService, baresip: Callable[..., peers.Peer],
                                                          caller_speech: Path, tmp_path: Path) -> None:
    agent_speech = peers.speech_wav("Hello, this is the service desk.", tmp_path / "agent.wav", pad_seconds=20)
    baresip(agent_speech)
    call = dialler.dial("2000", caller_id="13800138000")
    assert call.wait_answered(10), f"status {call.dialog.status}"
    call.leg.play(read_pcm(caller_speech))
    call.leg.wait_played(15)
    call.hangup()
    row = finished(dialler, call)
    assert row.direction is CallDirection.OUTBOUND and row.outcome is CallOutcome.COMPLETED
    assert row.hangup_by is HangupParty.SYSTEM and row.answered_at is not None
    [recording] = row.recordings
    assert recording.state is RecordingState.COMPLETE
    samples, _ = read_wav(recording.path)
    heard_by_us, _ = best_correlation(read_wav(agent_speech)[0][:, 0], samples[:, 0])
    assert heard_by_us >= MATCH_THRESHOLD, f"the far end is not on the left channel ({heard_by_us:.3f})"
    said_by_us, _ = best_correlation(read_wav(caller_speech)[0][:, 0], samples[:, 1])
    assert said_by_us >= MATCH_THRESHOLD, f"what we played is not on the right channel ({said_by_us:.3f})"
    [dump] = (tmp_path / "baresip").glob("dump-*-dec.wav")
    heard_by_them, _ = best_correlation(read_wav(caller_speech)[0][:, 0], read_wav(dump)[0][:, 0])
    assert heard_by_them >= MATCH_THRESHOLD, f"baresip did not hear us ({heard_by_them:.3f})"


def test_far_end_hanging_up_ends_the_call(dialler: HotlineService, baresip: Callable[..., peers.Peer],
                                          tmp_path: Path) -> None:
    baresip(peers.speech_wav("Goodbye.", tmp_path / "short.wav", pad_seconds=1))  # its end hangs up
    call = dialler.dial("2000")
    assert call.wait_answered(10)
    row = finished(dialler, call, timeout=20)
    assert row.outcome is CallOutcome.COMPLETED and row.hangup_by is HangupParty.CUSTOMER
    assert row.recordings[0].state is RecordingState.COMPLETE


def test_unanswered_call_is_cancelled_after_its_timeout(dialler: HotlineService, baresip: Callable[..., peers.Peer],
                                                        tmp_path: Path) -> None:
    phone = baresip(peers.speech_wav("Hello.", tmp_path / "hello.wav", pad_seconds=5), answer=False)
    call = dialler.dial("2000", timeout=3)
    row = finished(dialler, call)
    assert row.outcome is CallOutcome.NO_ANSWER and row.answered_at is None and not row.recordings
    assert peers.wait_for(lambda: call.dialog.status == 487, 5), f"our CANCEL was not confirmed ({call.dialog.status})"
    assert peers.wait_for(lambda: "cancel" in phone.output().lower() or "terminated" in phone.output().lower(), 5), \
        phone.output()[-2000:]


def test_unknown_extension_is_rejected(dialler: HotlineService) -> None:
    call = dialler.dial("2999")
    row = finished(dialler, call)
    assert row.outcome is CallOutcome.REJECTED and call.dialog.status == 404


@pytest.mark.slow
def test_a_dialled_call_longer_than_a_minute_survives(dialler: HotlineService, baresip: Callable[..., peers.Peer],
                                                      tmp_path: Path) -> None:
    baresip(peers.speech_wav("Please hold.", tmp_path / "hold.wav", pad_seconds=90))
    call = dialler.dial("2000")
    assert call.wait_answered(10)
    assert not call.dialog.ended.wait(65), f"the far end hung up: {call.dialog.end_reason}"
    call.hangup()
    row = finished(dialler, call)
    assert row.outcome is CallOutcome.COMPLETED and row.recordings[0].duration >= 65


def test_linphone_answers_and_hears_us(dialler: HotlineService, caller_speech: Path, tmp_path: Path) -> None:
    phone = peers.Linphone(tmp_path / "linphone", caller_speech, user="2001", password=AGENT_PASSWORD)
    try:
        phone.command("autoanswer enable")
        answered = dial_when_registered(dialler, "2001")
        assert answered.wait_answered(10), f"status {answered.dialog.status}: {phone.output()[-1500:]}"
        answered.leg.play(read_pcm(caller_speech))
        answered.leg.wait_played(15)
        answered.hangup()
        row = finished(dialler, answered)
        assert row.outcome is CallOutcome.COMPLETED and row.recordings[0].state is RecordingState.COMPLETE
    finally:
        phone.stop()
    # linphonec writes the WAV header of what it heard when it quits
    heard, _ = best_correlation(read_wav(caller_speech)[0][:, 0], read_wav(phone.heard)[0][:, 0])
    assert heard >= MATCH_THRESHOLD, f"Linphone did not hear us ({heard:.3f})"


def dial_when_registered(service: HotlineService, extension: str, timeout: float = 15) -> OutboundCall:
    """Dial once the PBX knows the extension (until then it answers 404)."""
    deadline = time.monotonic() + timeout
    while True:
        call = service.dial(extension)
        if not peers.wait_for(lambda: call.dialog.status == 404, 1) or time.monotonic() > deadline:
            return call
        time.sleep(0.5)


def test_extensions_are_dialled_as_they_are_and_other_numbers_through_the_trunk(settings: Settings) -> None:
    from telephony.outbound import dial_string

    settings.sip.trunk_prefix = "9"
    assert dial_string("2001", settings) == "2001"
    assert dial_string("+8613800138000", settings) == "9+8613800138000"
    assert dial_string("13800138000", settings) == "913800138000"
    settings.sip.trunk_prefix = ""
    assert dial_string("01012345678", settings) == "01012345678"
