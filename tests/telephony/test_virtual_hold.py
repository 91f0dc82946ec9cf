"""Virtual hold with real softphones: a Linphone caller presses 1 (RFC 2833), hangs up, and is called back agent first."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import time as clock_time
from pathlib import Path

import pytest
from sqlalchemy import select

from config import Settings
from models import agents as agent_rules
from models.agent import AgentEvent, AgentState
from models.call import Call, CallDirection, CallOutcome, CallState
from models.callback import AttemptOutcome, Callback, CallbackKind, CallbackState
from models.db import session_scope
from models.queues import ensure_default_queue, queue_named, set_queue
from models.recording import RecordingState
from telephony.service import HotlineService
from tests.telephony import peers
from tests.telephony.audio_checks import assert_on_channel, read_wav
from tests.telephony.test_dialler import LEAD_SKIPPED, spoken
from tests.telephony.test_queued_call import AGENT_PASSWORD, add_agent
from tests.telephony.test_survey import wait_callback

pytestmark = pytest.mark.sip

CUSTOMER = "2001"


@pytest.fixture
def kept_queue(sip_settings: Settings) -> Settings:
    """The default queue offering virtual hold after 2 s; calling hours all day; short prompts."""
    rules = sip_settings.queues
    rules.wrap_up_seconds, rules.ring_timeout = 0, 8
    rules.virtual_hold_prompt, rules.virtual_hold_number_prompt, rules.virtual_hold_confirm = "按1", "按井号", "再见"
    sip_settings.callbacks.calling_hours_start = clock_time(0, 0)
    sip_settings.callbacks.calling_hours_end = clock_time(23, 59, 59)
    with session_scope(sip_settings) as session:
        queue = ensure_default_queue(session, sip_settings)
        assert queue is not None
        set_queue(session, queue, virtual_hold_after_seconds=2)
    add_agent(sip_settings, "zhang", "1001", available=False)
    add_agent(sip_settings, "customer", CUSTOMER, available=False)  # the customer's extension, known to the PBX
    return sip_settings


def kept(settings: Settings) -> Callback | None:
    with session_scope(settings) as session:
        return session.scalar(select(Callback).where(Callback.kind == CallbackKind.VIRTUAL_HOLD))


def inbound_state(settings: Settings) -> CallState | None:
    with session_scope(settings) as session:
        return session.scalar(select(Call.state).where(Call.direction == CallDirection.INBOUND))


def inbound_outcome(settings: Settings) -> CallOutcome | None:
    with session_scope(settings) as session:
        return session.scalar(select(Call.outcome).where(Call.direction == CallDirection.INBOUND))


@pytest.mark.parametrize("offered", ["after_the_wait", "on_the_estimate"])
def test_a_linphone_caller_keeps_their_place_and_is_called_back_agent_first(
        kept_queue: Settings, start_service: Callable[..., HotlineService], tmp_path: Path, offered: str) -> None:
    settings = kept_queue
    if offered == "on_the_estimate":  # the queue's wait is long; the estimate (nobody staffed: 3 min) is over 60 s
        with session_scope(settings) as session:
            set_queue(session, queue_named(session, settings.queues.default_queue), virtual_hold_after_seconds=600)
        settings.queues.virtual_hold_estimate_seconds = 60
    service = start_service()
    agent_speech = spoken("Hello, this is Zhang from the service team, you asked us to call back.",
                          tmp_path / "agent.wav", lead_seconds=4, pad_seconds=3)
    agent = peers.baresip_callee(tmp_path / "agent", agent_speech, user="1001", password=AGENT_PASSWORD)
    customer = peers.Linphone(tmp_path / "linphone", peers.speech_wav("Hello?", tmp_path / "c.wav", pad_seconds=60),
                              user=CUSTOMER, password=AGENT_PASSWORD)
    try:
        customer.command("autoanswer enable")
        assert service.pbx is not None
        assert peers.wait_for(lambda: {"1001", CUSTOMER} <= (service.pbx.registered() or set()), 20)
        customer.call(f"sip:1000@{peers.HOST}:{peers.PBX_PORT}")
        assert peers.wait_for(lambda: inbound_state(settings) is CallState.QUEUED, 20)
        # 1 once the offer is said (2 s in the queue, after the position announcement), then # for this number.
        time.sleep(5)
        customer.command("1")
        time.sleep(1.5)
        customer.command("#")
        assert peers.wait_for(lambda: kept(settings) is not None, 15), customer.output()[-3000:]
        callback = kept(settings)
        assert callback is not None, customer.output()[-2000:]
        assert callback.phone == CUSTOMER and callback.state in (CallbackState.SCHEDULED, CallbackState.DUE)
        assert peers.wait_for(lambda: inbound_outcome(settings) is CallOutcome.KEPT_PLACE, 20), "Hotline hangs up"
        assert not service.dialler.running, "no callback is dialled while no agent is free"
        with session_scope(settings) as session:
            zhang = agent_rules.agent_named(session, "zhang")
            assert zhang is not None
            agent_rules.log_in(session, zhang, source="test")
        try:
            done = wait_callback(settings, callback.id, {CallbackState.DONE}, 60)
        except AssertionError:
            raise AssertionError(customer.output()[-3000:]) from None
    finally:
        agent.stop()
        customer.stop()
    [attempt] = done.attempt_rows
    assert attempt.outcome is AttemptOutcome.COMPLETED
    assert service.events.flush(10)
    with session_scope(settings) as session:
        zhang = agent_rules.agent_named(session, "zhang")
        assert zhang is not None and attempt.staff_id == zhang.user_id
        rang = session.scalar(select(AgentEvent.at).where(AgentEvent.agent_id == zhang.id,
                                                          AgentEvent.state == AgentState.RINGING))
        assert rang is not None and attempt.dialled_at is not None and rang < attempt.dialled_at, "agent first"
        call = session.scalar(select(Call).where(Call.callback_id == callback.id))
        assert call is not None and call.agent_id == zhang.user_id and call.caller_id == CUSTOMER
        recording = call.recordings[0]
        assert recording.state is RecordingState.COMPLETE
        path = recording.path
    assert_on_channel(read_wav(agent_speech)[0][LEAD_SKIPPED:, 0], read_wav(path)[0], 1)  # the agent on the right
