"""The call log: caller-ID matching, chained calls, tickets opened or linked, recordings, alarms."""

from __future__ import annotations

from unittest import mock

from models.alarm import AlarmKind
from models.call import CallOutcome, CallState, HangupParty
from models.calllog import (
    close_recording, mark_bridged, log_inbound, mark_answered, mark_ended, mark_state, open_recording, raise_alarm,
    ticket_for_call, unfinished_recordings,
)
from models.directory import add_customer
from models.recording import RecordingState
from models.ticket import EventKind, TicketStatus
from models.ticketing import change_ticket


def inbound(db, settings, caller="13800138000", call_id="c1"):
    return log_inbound(db, settings, caller=caller, callee="1000", sip_call_id=call_id)


def test_caller_with_several_numbers_matches_through_formatting_noise(db, settings):
    customer = add_customer(db, "王先生", ["138 0013 8000", "010-6552-9988"], "CN")
    first = inbound(db, settings, caller="sip:+86-138-0013-8000@127.0.0.1")
    second = inbound(db, settings, caller="<sip:01065529988@127.0.0.1>", call_id="c2")
    assert first.customer is customer and second.customer is customer
    assert first.caller_id == "+8613800138000"
    assert second.previous_call is first  # calls of one customer form a chain


def test_unknown_number_is_never_matched_to_another_customer(db, settings):
    known = add_customer(db, "王先生", ["13800138000"], "CN")
    call = inbound(db, settings, caller="13900139000")
    assert call.customer is not known and call.customer.phones[0].number == "+8613900139000"


def test_unparseable_caller_id_is_kept_raw_without_a_customer(db, settings):
    call = inbound(db, settings, caller="sip:1001@127.0.0.1")
    assert call.customer is None and call.caller_id == "sip:1001@127.0.0.1"
    assert ticket_for_call(db, settings, call).phone == "sip:1001@127.0.0.1"


def test_life_of_a_call_sets_each_timestamp_once(db, settings):
    call = inbound(db, settings)
    mark_answered(db, call)
    mark_state(db, call, CallState.QUEUED)
    mark_ended(db, call, outcome=CallOutcome.ABANDONED, hangup_by=HangupParty.CUSTOMER)
    assert call.ring_at <= call.answered_at <= call.queued_at <= call.ended_at
    assert (call.state, call.outcome, call.hangup_by) == (CallState.ENDED, CallOutcome.ABANDONED, HangupParty.CUSTOMER)


def test_call_opens_a_ticket_then_later_calls_link_to_it(db, settings):
    first = inbound(db, settings)
    ticket = ticket_for_call(db, settings, first)
    second = inbound(db, settings, call_id="c2")
    assert ticket_for_call(db, settings, second) is ticket
    assert [c.id for c in ticket.calls] == [first.id, second.id]
    assert [e.kind for e in ticket.events].count(EventKind.CALL_LINKED) == 2


def test_closed_ticket_is_not_reused(db, settings):
    first = inbound(db, settings)
    ticket = ticket_for_call(db, settings, first)
    change_ticket(db, settings, ticket, None, status=TicketStatus.CLOSED)
    assert ticket_for_call(db, settings, inbound(db, settings, call_id="c2")) is not ticket


def test_closing_a_recording_queues_transcription_after_commit(db, settings):
    call = inbound(db, settings)
    recording = open_recording(db, settings, call, "/rec/1.wav")
    assert unfinished_recordings(db) == [recording]
    with mock.patch("workers.dispatch.enqueue_transcription") as enqueue:
        close_recording(db, settings, recording, duration=3.0, sha256="ab" * 32, size_bytes=48044)
        enqueue.assert_not_called()
        db.commit()
        enqueue.assert_called_once_with(settings, recording.id)
    assert recording.state is RecordingState.COMPLETE and unfinished_recordings(db) == []


def test_failed_recording_is_not_queued_and_raises_an_alarm(db, settings):
    call = inbound(db, settings)
    recording = open_recording(db, settings, call, "/rec/1.wav")
    with mock.patch("workers.dispatch.enqueue_transcription") as enqueue:
        close_recording(db, settings, recording, duration=0, sha256="", size_bytes=0,
                        state=RecordingState.FAILED, error="disk full")
        alarm = raise_alarm(db, AlarmKind.RECORDING_FAILED, "disk full", call=call)
        db.commit()
        enqueue.assert_not_called()
    assert alarm.call_id == call.id


def test_first_agent_to_take_the_contact_owns_the_ticket(db, settings):
    from models.accounts import add_user
    from models.user import Role

    first_agent = add_user(db, "zhang", Role.AGENT, "agent-pass-1", realm="hotline", extension="1001")
    second_agent = add_user(db, "li", Role.AGENT, "agent-pass-2", realm="hotline", extension="1002")
    call = inbound(db, settings)
    ticket = ticket_for_call(db, settings, call)
    mark_bridged(db, call, first_agent)
    later = inbound(db, settings, call_id="c2")
    ticket_for_call(db, settings, later)
    mark_bridged(db, later, second_agent)
    assert call.state is CallState.BRIDGED and call.bridged_at is not None
    assert ticket.owner_id == first_agent.id
    owner_event = [e for e in ticket.events if e.field == "owner_id"]
    assert len(owner_event) == 1 and owner_event[0].actor_id == first_agent.id
