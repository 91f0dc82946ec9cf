"""The automatic survey on real softphones: Hotline calls back a resolved ticket, the customer presses keys and speaks."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import time as clock_time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from config import Settings
from models.accounts import add_user
from models.call import Call, CallDirection
from models.callback import AttemptOutcome, Callback, CallbackKind, CallbackState, Satisfaction
from models.callbacks import resolve_ticket
from models.db import session_scope
from models.recording import RecordingState
from models.ticket import TicketType
from models.ticketing import create_ticket
from models.user import Role
from telephony.service import HotlineService
from tests.telephony import peers

pytestmark = pytest.mark.sip

CUSTOMER = "2001"  # the customer called from this extension of the PBX: they are called back there
PASSWORD = "customer-secret"


@pytest.fixture
def survey_settings(sip_settings: Settings) -> Settings:
    """Calling hours all day (the suite runs at any hour), a quick reconciler, short waits, the customer's extension."""
    rules = sip_settings.callbacks
    rules.calling_hours_start, rules.calling_hours_end = clock_time(0, 0), clock_time(23, 59, 59)
    rules.reconcile_seconds = 1
    rules.survey_key_seconds = 5
    rules.answer_silence_seconds = 2
    rules.survey_intro = "您好"
    rules.survey_question = "满意请按1到4"
    rules.survey_open_question = "请说"
    rules.survey_thanks = "谢谢"
    with session_scope(sip_settings) as session:
        add_user(session, "customer", Role.AGENT, PASSWORD, realm=sip_settings.sip.realm, extension=CUSTOMER)
    return sip_settings


def resolve_when_registered(service: HotlineService, timeout: float = 20) -> int:
    """Once the customer's phone is registered, resolve their ticket: the satisfaction revisit is due now."""
    assert service.pbx is not None
    assert peers.wait_for(lambda: CUSTOMER in (service.pbx.registered() or set()), timeout), "phone not registered"
    settings = service.settings
    with session_scope(settings) as session:
        ticket = create_ticket(session, settings, ticket_type=TicketType.REPAIR, phone=CUSTOMER, description="不制冷")
        return resolve_ticket(session, settings, ticket, "更换压缩机").id


def wait_callback(settings: Settings, callback_id: int, states: set[CallbackState], timeout: float) -> Callback:
    def reached() -> bool:
        with session_scope(settings) as session:
            return session.get_one(Callback, callback_id).state in states

    reached_in_time = peers.wait_for(reached, timeout, interval=0.2)
    with session_scope(settings) as session:
        callback = session.get_one(Callback, callback_id)
        _ = callback.attempt_rows, callback.ticket
    assert reached_in_time, (f"callback {callback_id} is {callback.state.value}, not {sorted(s.value for s in states)}"
                             f" after {timeout} s; attempts: {[(a.number, a.outcome) for a in callback.attempt_rows]},"
                             f" next at {callback.next_attempt_at}")
    return callback


def answered_then_tried_again(service: HotlineService, phone: peers.Peer) -> Callback:
    """Resolve once the phone is registered; the customer answers, and the callback waits for its next attempt."""
    try:
        callback_id = resolve_when_registered(service)
        wait_callback(service.settings, callback_id, {CallbackState.IN_CALL}, 30)
        return wait_callback(service.settings, callback_id, {CallbackState.SCHEDULED}, 60)
    finally:
        phone.stop()


def survey_call(settings: Settings, callback_id: int) -> Call:
    with session_scope(settings) as session:
        call = session.scalar(select(Call).where(Call.callback_id == callback_id))
        assert call is not None
        _ = call.recordings
        return call


@pytest.mark.parametrize("dtmf_info", [False, True], ids=["rfc2833", "sip-info"])
def test_a_linphone_customer_answers_the_survey_with_keys(
        survey_settings: Settings, start_service: Callable[..., HotlineService], tmp_path: Path,
        dtmf_info: bool) -> None:
    service = start_service()
    speech = peers.speech_wav("The technician was late, please come on time.", tmp_path / "answer.wav",
                              pad_seconds=30)
    phone = peers.Linphone(tmp_path / "linphone", speech, user=CUSTOMER, password=PASSWORD, dtmf_info=dtmf_info)
    try:
        phone.command("autoanswer enable")
        callback_id = resolve_when_registered(service)
        wait_callback(survey_settings, callback_id, {CallbackState.IN_CALL}, 30)
        time.sleep(1.5)
        phone.command("4")  # during the question: 不满意
        done = wait_callback(survey_settings, callback_id, {CallbackState.DONE}, 60)
    finally:
        phone.stop()
    assert done.satisfaction is Satisfaction.DISSATISFIED and done.score == 2
    assert done.survey_answers and done.survey_answers["key"] == "4"
    span = done.survey_answers["improve_answer"]
    assert span["to_s"] > span["from_s"]
    [attempt] = done.attempt_rows
    assert attempt.outcome is AttemptOutcome.COMPLETED and not attempt.answering_machine
    assert service.events.flush(10)
    call = survey_call(survey_settings, callback_id)
    assert call.direction is CallDirection.OUTBOUND and call.ticket_id == done.ticket_id
    assert call.recordings[0].state is RecordingState.COMPLETE
    with session_scope(survey_settings) as session:
        supervisor = session.scalar(select(Callback).where(Callback.kind == CallbackKind.SUPERVISOR))
        assert supervisor is not None and supervisor.ticket_id == done.ticket_id
        assert supervisor.ticket is not None and supervisor.ticket.improvement_flagged_at is not None


def test_a_baresip_customer_presses_a_wrong_key_then_answers_satisfied(
        survey_settings: Settings, start_service: Callable[..., HotlineService], tmp_path: Path) -> None:
    service = start_service()
    speech = peers.speech_wav("Everything works now, thank you.", tmp_path / "answer.wav", pad_seconds=40)
    phone = peers.baresip_callee(tmp_path / "baresip", speech, user=CUSTOMER, password=PASSWORD)
    try:
        callback_id = resolve_when_registered(service)
        wait_callback(survey_settings, callback_id, {CallbackState.IN_CALL}, 30)
        time.sleep(1.5)
        assert '"ok":true' in peers.baresip_command(peers.BARESIP_PORT, "sndcode", "9").replace(" ", "")
        time.sleep(3)  # "对不起，您的按键无效" and the question again
        peers.baresip_command(peers.BARESIP_PORT, "sndcode", "2")
        time.sleep(3)
        peers.baresip_command(peers.BARESIP_PORT, "sndcode", "#")  # the spoken answer ends with #
        done = wait_callback(survey_settings, callback_id, {CallbackState.DONE}, 60)
    finally:
        phone.stop()
    assert done.satisfaction is Satisfaction.SATISFIED and done.score == 4
    assert done.survey_answers and done.survey_answers["keys"][:2] == ["9", "2"]
    with session_scope(survey_settings) as session:
        assert session.scalar(select(Callback).where(Callback.kind == CallbackKind.SUPERVISOR)) is None


def test_a_customer_who_never_answers_is_retried_then_unreachable(
        survey_settings: Settings, start_service: Callable[..., HotlineService], tmp_path: Path) -> None:
    survey_settings.callbacks.retry_minutes = 0.05  # 3 s between attempts
    survey_settings.callbacks.max_attempts = 2
    survey_settings.sip.dial_timeout = 3
    service = start_service()
    phone = peers.baresip_callee(tmp_path / "baresip", peers.speech_wav("Hello.", tmp_path / "hello.wav"),
                                 user=CUSTOMER, password=PASSWORD, answer=False)
    try:
        callback_id = resolve_when_registered(service)
        done = wait_callback(survey_settings, callback_id, {CallbackState.UNREACHABLE}, 90)
    finally:
        phone.stop()
    assert [a.outcome for a in done.attempt_rows] == [AttemptOutcome.NO_ANSWER, AttemptOutcome.NO_ANSWER]
    first, second = done.attempt_rows
    assert first.dialled_at and second.dialled_at and (second.dialled_at - first.dialled_at).total_seconds() >= 3


def test_a_customer_who_hangs_up_mid_survey_is_tried_again(
        survey_settings: Settings, start_service: Callable[..., HotlineService], tmp_path: Path) -> None:
    """baresip answers, says a word and hangs up (its file ends) during the question: hung_up, retried."""
    service = start_service()
    phone = peers.baresip_callee(tmp_path / "baresip", peers.speech_wav("Hello?", tmp_path / "hello.wav",
                                                                         pad_seconds=2), user=CUSTOMER, password=PASSWORD)
    done = answered_then_tried_again(service, phone)
    [attempt] = done.attempt_rows
    assert attempt.outcome is AttemptOutcome.HUNG_UP and done.satisfaction is None
    assert done.next_attempt_at is not None and done.attempts == 1


def test_a_number_nobody_has_is_unreachable_at_once(
        survey_settings: Settings, start_service: Callable[..., HotlineService]) -> None:
    """An extension the PBX does not know: rejected (404), not worth trying again."""
    service = start_service()
    with session_scope(survey_settings) as session:
        ticket = create_ticket(session, survey_settings, ticket_type=TicketType.REPAIR, phone="2999", description="不制冷")
        callback_id = resolve_ticket(session, survey_settings, ticket, "更换压缩机").id
    done = wait_callback(survey_settings, callback_id, {CallbackState.UNREACHABLE}, 60)
    assert [a.outcome for a in done.attempt_rows] == [AttemptOutcome.REJECTED]
    assert service.events.flush(10)


def test_an_answering_machine_is_told_by_its_silence_and_tried_again(
        survey_settings: Settings, start_service: Callable[..., HotlineService], tmp_path: Path) -> None:
    """The phone answers and never speaks nor presses a key: the hint is kept and the callback retried."""
    survey_settings.callbacks.survey_repeats = 1
    survey_settings.callbacks.survey_key_seconds = 2
    service = start_service()
    silence = tmp_path / "silence.wav"
    peers.write_wav(silence, np.zeros(8000 * 60, dtype=np.int16))
    phone = peers.baresip_callee(tmp_path / "baresip", silence, user=CUSTOMER, password=PASSWORD)
    done = answered_then_tried_again(service, phone)
    [attempt] = done.attempt_rows
    assert attempt.outcome is AttemptOutcome.ANSWERING_MACHINE and attempt.answering_machine
    assert done.attempts == 1 and done.satisfaction is None


@pytest.mark.slow
def test_a_survey_call_longer_than_a_minute_survives(
        survey_settings: Settings, start_service: Callable[..., HotlineService], tmp_path: Path) -> None:
    """A customer who talks on for more than a minute after their key: the call stays up and ends normally."""
    survey_settings.callbacks.answer_max_seconds = 70
    survey_settings.callbacks.answer_silence_seconds = 3
    service = start_service()
    words = " ".join(["The washing machine works well now and the technician was very friendly."] * 17)
    speech = peers.speech_wav(words, tmp_path / "long.wav", pad_seconds=20)
    phone = peers.baresip_callee(tmp_path / "baresip", speech, user=CUSTOMER, password=PASSWORD)
    try:
        callback_id = resolve_when_registered(service)
        wait_callback(survey_settings, callback_id, {CallbackState.IN_CALL}, 30)
        time.sleep(1.5)
        peers.baresip_command(peers.BARESIP_PORT, "sndcode", "1")
        done = wait_callback(survey_settings, callback_id, {CallbackState.DONE}, 120)
    finally:
        phone.stop()
    assert done.satisfaction is Satisfaction.VERY_SATISFIED
    span = done.survey_answers["improve_answer"] if done.survey_answers else {}
    assert span["to_s"] - span["from_s"] >= 60, span
    assert service.events.flush(10)
    call = survey_call(survey_settings, callback_id)
    assert call.recordings[0].state is RecordingState.COMPLETE and call.recordings[0].duration >= 65
