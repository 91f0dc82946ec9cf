"""The call log: caller-ID matching, chained calls, tickets opened or linked, recordings, alarms.

Every function may be applied twice (a journal replayed after a crash): the second time changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select

from models.alarm import Alarm, AlarmKind
from models.call import Call, CallDirection, CallOutcome, CallState, HangupParty, SupervisionMode, TransferKind
from models.calllog import (
    agent_segments, close_recording, log_call, log_outbound, mark_bridged, log_inbound, mark_answered, mark_ended,
    mark_state, open_recording, raise_alarm, record_transfer, supervised, supervisions, ticket_for_call,
    unfinished_recordings,
)
from models.directory import add_customer
from models.recording import Recording, RecordingState
from models.ticket import EventKind, TicketStatus
from models.ticketing import change_ticket

ROOT = Path(__file__).resolve().parents[2]


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


def test_failed_recording_is_kept_with_its_error_and_an_alarm(db, settings):
    call = inbound(db, settings)
    recording = open_recording(db, settings, call, "/rec/1.wav")
    assert unfinished_recordings(db) == [recording]
    close_recording(db, settings, recording, duration=0, sha256="", size_bytes=0,
                    state=RecordingState.FAILED, error="disk full")
    alarm = raise_alarm(db, AlarmKind.RECORDING_FAILED, "disk full", call=call)
    assert (recording.state, recording.error) == (RecordingState.FAILED, "disk full")
    assert alarm.call_id == call.id and unfinished_recordings(db) == []


def test_a_call_is_logged_once_per_uid(db, settings):
    first = log_call(db, settings, uid="a" * 32, direction=CallDirection.INBOUND, caller="13800138000",
                     callee="1000", sip_call_id="c1")
    again = log_call(db, settings, uid="a" * 32, direction=CallDirection.INBOUND, caller="13800138000",
                     callee="1000", sip_call_id="c1")
    assert again is first and db.scalar(select(func.count(Call.id))) == 1
    assert len(inbound(db, settings).uid) == 32  # callers without a uid get one


def test_outbound_call_names_the_customer_not_our_side(db, settings):
    call = log_outbound(db, settings, number="13800138000", caller="1000", sip_call_id="o1")
    assert (call.direction, call.caller_id, call.callee) == (CallDirection.OUTBOUND, "+8613800138000", "1000")


def test_a_recording_is_opened_and_sealed_once(db, settings):
    call = inbound(db, settings)
    recording = open_recording(db, settings, call, "/rec/1.wav", at=call.ring_at)
    assert open_recording(db, settings, call, "/rec/1.wav") is recording
    close_recording(db, settings, recording, duration=3.0, sha256="ab" * 32, size_bytes=48044,
                    gap_seconds=0.2, longest_gap_seconds=0.1)
    closed_at = recording.closed_at
    close_recording(db, settings, recording, duration=0, sha256="", size_bytes=0, state=RecordingState.FAILED)
    assert (recording.state, recording.duration, recording.closed_at) == (RecordingState.COMPLETE, 3.0, closed_at)
    assert (recording.gap_seconds, recording.longest_gap_seconds) == (0.2, 0.1)
    assert db.scalar(select(func.count(Recording.id))) == 1 and db.scalar(select(func.count(Alarm.id))) == 0


def test_an_ended_call_stays_as_it_ended(db, settings):
    call = inbound(db, settings)
    mark_ended(db, call, outcome=CallOutcome.ABANDONED, hangup_by=HangupParty.CUSTOMER)
    ended_at = call.ended_at
    mark_ended(db, call, outcome=CallOutcome.FAILED, hangup_by=HangupParty.SYSTEM)
    mark_state(db, call, CallState.QUEUED)
    assert (call.state, call.outcome, call.ended_at, call.queued_at) == (
        CallState.ENDED, CallOutcome.ABANDONED, ended_at, None)


def test_a_call_is_linked_to_its_ticket_once_dated_when_reported(db, settings):
    call = inbound(db, settings)
    ended = datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc)
    ticket = ticket_for_call(db, settings, call, at=ended)
    assert ticket_for_call(db, settings, call) is ticket
    [link] = [e for e in ticket.events if e.kind is EventKind.CALL_LINKED]
    assert link.at == ended and link.data == {"call_id": call.id}


def test_an_alarm_raised_again_at_the_same_time_is_the_same_alarm(db, settings):
    call = inbound(db, settings)
    at = datetime.now(timezone.utc) - timedelta(hours=1)
    first = raise_alarm(db, AlarmKind.RECORDING_FAILED, "disk full", call=call, at=at)
    assert raise_alarm(db, AlarmKind.RECORDING_FAILED, "disk full", call=call, at=at) is first
    assert first.raised_at == at
    raise_alarm(db, AlarmKind.RECORDING_FAILED, "disk full", call=call)  # a new fault, a new alarm
    assert db.scalar(select(func.count(Alarm.id))) == 2


def test_models_import_nothing_above_them():
    found = subprocess.run(
        [sys.executable, "-c", "import sys, models, models.calllog, models.db\n"
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('workers', 'telephony', 'webui', 'hotline')))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    assert found.stdout.strip() == "[]"


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


# --- Transfers: the call's agents in turn, the ticket's handlers; supervisors ----------------

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def agents(db):
    from models.accounts import add_user
    from models.user import Role

    return [add_user(db, name, Role.AGENT, f"agent-pass-{n}", realm="hotline", extension=f"100{n}")
            for n, name in enumerate(("zhang", "li", "wang"), start=1)]


def handlers_of(ticket):
    return [(handler.user.username, handler.since) for handler in ticket.handlers]


def test_each_agent_who_serves_the_customer_is_a_handler_once_and_the_first_owns_the_ticket(db, settings):
    zhang, li, _ = agents(db)
    call = inbound(db, settings)
    mark_state(db, call, CallState.QUEUED, at(5))
    ticket = ticket_for_call(db, settings, call, at=at(5))  # inbound: linked when queued, before any agent
    mark_bridged(db, call, zhang, at(10))
    mark_bridged(db, call, zhang, at(10))  # the same report applied again
    mark_state(db, call, CallState.ON_HOLD, at(30))
    record_transfer(db, call, TransferKind.BLIND, "zhang", "li", at(40))
    mark_bridged(db, call, li, at(40))
    mark_bridged(db, call, li, at(41))  # the flow reports the bridge with li once more
    mark_ended(db, call, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER, at=at(90))
    later = inbound(db, settings, call_id="c2")  # the customer calls again: zhang takes it
    ticket_for_call(db, settings, later)
    mark_bridged(db, later, zhang, at(500))
    assert handlers_of(ticket) == [("zhang", at(10)), ("li", at(40))]
    assert ticket.owner_id == zhang.id and call.agent_id == li.id
    assert len([e for e in ticket.events if e.field == "owner_id"]) == 1


def test_agents_of_a_call_linked_to_its_ticket_after_the_bridge_are_its_handlers(db, settings):
    zhang, li, _ = agents(db)
    call = log_outbound(db, settings, number="13800138000", caller="1000", sip_call_id="o1", at=at(0))
    mark_bridged(db, call, zhang, at(10))  # a staff-first callback: the ticket is linked at the end
    record_transfer(db, call, TransferKind.BLIND, "zhang", "li", at(40))
    mark_bridged(db, call, li, at(40))
    mark_ended(db, call, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER, at=at(90))
    ticket = ticket_for_call(db, settings, call, at=at(90))
    assert handlers_of(ticket) == [("zhang", at(10)), ("li", at(40))]
    assert ticket.owner_id == zhang.id  # 首问负责制, however late the link


def test_segments_follow_the_bridge_each_transfer_and_the_end(db, settings):
    zhang, li, wang = agents(db)
    call = inbound(db, settings)
    mark_state(db, call, CallState.QUEUED, at(5))
    assert agent_segments(call) == []
    mark_bridged(db, call, zhang, at(10))
    assert agent_segments(call) == [{"agent": "zhang", "from": at(10), "to": None}]  # still serving
    mark_state(db, call, CallState.ON_HOLD, at(20))  # on hold, then back: the same segment
    mark_state(db, call, CallState.BRIDGED, at(25))
    record_transfer(db, call, TransferKind.ATTENDED, "zhang", "li", at(40))
    mark_bridged(db, call, li, at(40))
    record_transfer(db, call, TransferKind.BLIND, "li", "技术支持", at(60))  # to a queue: li is let go
    mark_state(db, call, CallState.QUEUED, at(60.2))
    mark_bridged(db, call, wang, at(75))  # the queue gives the caller to wang
    mark_ended(db, call, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.AGENT, at=at(120))
    mark_ended(db, call, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.AGENT, at=at(121))  # again
    assert agent_segments(call) == [
        {"agent": "zhang", "from": at(10), "to": at(40)},
        {"agent": "li", "from": at(40), "to": at(60)},
        {"agent": "wang", "from": at(75), "to": at(120)},
    ]


def test_a_failed_transfer_keeps_the_first_agents_segment(db, settings):
    zhang, *_ = agents(db)
    call = inbound(db, settings)
    mark_bridged(db, call, zhang, at(10))
    mark_state(db, call, CallState.ON_HOLD, at(20))  # li did not answer: back to zhang
    mark_bridged(db, call, zhang, at(35))
    mark_ended(db, call, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER, at=at(60))
    assert agent_segments(call) == [{"agent": "zhang", "from": at(10), "to": at(60)}]


def test_a_supervisor_joining_changing_mode_and_leaving_is_on_the_call_once(db, settings):
    from models.accounts import add_user
    from models.user import Role

    zhang, *_ = agents(db)
    add_user(db, "boss", Role.SUPERVISOR, "boss-pass-1", realm="hotline", extension="1009")
    call = inbound(db, settings)
    mark_bridged(db, call, zhang, at(10))
    for _ in range(2):  # each report applied twice (a journal replayed)
        supervised(db, call, "1009", SupervisionMode.LISTEN, at(20))
    for _ in range(2):
        supervised(db, call, "1009", SupervisionMode.WHISPER, at(30))
    for _ in range(2):
        supervised(db, call, "1009", None, at(40))
    supervised(db, call, "1010", SupervisionMode.BARGE, at(50))  # an extension no user has (any more)
    mark_ended(db, call, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER, at=at(60))
    supervised(db, call, "1009", SupervisionMode.LISTEN, at(70))  # too late: the call is over
    assert supervisions(call) == [
        {"supervisor": "boss", "mode": "listen", "at": at(20), "until": at(30)},
        {"supervisor": "boss", "mode": "whisper", "at": at(30), "until": at(40)},
        {"supervisor": "1010", "mode": "barge", "at": at(50), "until": at(60)},  # closed by the call's end
    ]
