"""The call log: each call's row, its recording and its ticket, as telephony reports them.

Telephony's call events (``telephony.call_events``) apply these functions from a journal, and may
apply one twice after a crash: each is idempotent, keyed by the call's uid (and a recording's
path). They write rows only; the jobs that follow a commit are the caller's to enqueue.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import Settings
from models.alarm import Alarm, AlarmKind
from models.audit import acting_as
from models.base import utcnow
from models.call import (
    Call, CallDirection, CallOutcome, CallSegment, CallState, CallSupervision, CallTransfer, HangupParty, SupervisionMode,
    TransferKind, new_call_uid,
)
from models.directory import customer_for_number
from models.phone import normalize
from models.recording import Recording, RecordingState
from models.ticket import EventKind, Ticket, TicketEvent, TicketHandler, TicketType
from models.ticketing import create_ticket, open_ticket_of
from models.user import User

# Recordings worth transcribing once sealed.
TRANSCRIBABLE = (RecordingState.COMPLETE, RecordingState.REPAIRED)


def log_call(session: Session, settings: Settings, *, uid: str, direction: CallDirection, caller: str,
             callee: str, sip_call_id: str, at: datetime | None = None, callback_id: int | None = None) -> Call:
    """A ringing call, matched to its customer by number and chained to their last call; once per uid.

    Whichever way the call goes, ``caller`` is the customer's number and ``callee`` the hotline's
    side, as the row keeps them (``caller_id``, ``callee``).
    """
    existing = call_by_uid(session, uid)
    if existing is not None:
        return existing
    e164 = normalize(caller, settings.general.phone_region)
    customer = customer_for_number(session, e164)
    previous = None
    if customer is not None:
        previous = session.scalar(
            select(Call).where(Call.customer_id == customer.id).order_by(Call.ring_at.desc(), Call.id.desc()).limit(1)
        )
    call = Call(
        uid=uid, direction=direction, state=CallState.RINGING, sip_call_id=sip_call_id,
        caller_id=e164 or caller, caller_raw=caller, callee=callee,
        customer=customer, previous_call=previous, ring_at=at or utcnow(), callback_id=callback_id,
    )
    session.add(call)
    session.flush()
    return call


def log_inbound(session: Session, settings: Settings, *, caller: str, callee: str, sip_call_id: str,
                at: datetime | None = None, uid: str | None = None) -> Call:
    """A ringing inbound call (see ``log_call``); a uid is made up when none is given."""
    return log_call(session, settings, uid=uid or new_call_uid(), direction=CallDirection.INBOUND, caller=caller,
                    callee=callee, sip_call_id=sip_call_id, at=at)


def log_outbound(session: Session, settings: Settings, *, number: str, caller: str, sip_call_id: str,
                 at: datetime | None = None, callback_id: int | None = None, uid: str | None = None) -> Call:
    """An outbound call from ``caller`` (our side) to the customer's ``number`` (callbacks)."""
    return log_call(session, settings, uid=uid or new_call_uid(), direction=CallDirection.OUTBOUND, caller=number,
                    callee=caller, sip_call_id=sip_call_id, at=at, callback_id=callback_id)


def call_by_uid(session: Session, uid: str) -> Call | None:
    return session.scalar(select(Call).where(Call.uid == uid))


# The timestamp column each state sets when the call first reaches it.
STATE_TIMESTAMPS = {
    CallState.GREETING: "answered_at",
    CallState.QUEUED: "queued_at",
    CallState.BRIDGED: "bridged_at",
    CallState.ENDED: "ended_at",
}


def mark_state(session: Session, call: Call, state: CallState, at: datetime | None = None) -> None:
    """Move the call to ``state``, stamping the state's column the first time; an ended call stays ended.

    Queued again (a transfer to a queue) or ended, nobody serves the customer any more: the agent's
    segment closes; at the end, so does any supervisor's.
    """
    if call.state is CallState.ENDED:
        return
    at = at or utcnow()
    call.state = state
    column = STATE_TIMESTAMPS.get(state)
    if column and getattr(call, column) is None:
        setattr(call, column, at)
    if state in (CallState.QUEUED, CallState.ENDED):
        _agent_leaves(call, at)
    if state is CallState.ENDED:
        for supervision in call.supervisions:
            if supervision.ended_at is None:
                supervision.ended_at = at
    session.flush()


def mark_answered(session: Session, call: Call, at: datetime | None = None) -> None:
    mark_state(session, call, CallState.GREETING, at)


def mark_ended(session: Session, call: Call, *, outcome: CallOutcome, hangup_by: HangupParty,
               at: datetime | None = None) -> None:
    """The call's end, once: ending an ended call again changes nothing."""
    if call.state is CallState.ENDED:
        return
    call.outcome = outcome
    call.hangup_by = hangup_by
    mark_state(session, call, CallState.ENDED, at)


def mark_bridged(session: Session, call: Call, agent: User, at: datetime | None = None) -> None:
    """The agent took the call: their segment starts, and they become a handler of its ticket.

    The first agent to take the contact owns the ticket (首问负责制); a call whose ticket is linked
    later gets its agents then (``ticket_for_call``).
    """
    at = at or utcnow()
    call.agent = agent
    if call.state is not CallState.ENDED:
        _agent_takes(session, call, agent, at)
    mark_state(session, call, CallState.BRIDGED, at)
    if call.ticket is not None:
        _handled_by(session, call.ticket, agent, at)


def _agent_takes(session: Session, call: Call, agent: User, at: datetime) -> None:
    """A segment for ``agent`` from ``at``, closing the one before; the same agent again (off hold,
    back from a failed transfer) goes on in their segment."""
    current = _open_segment(call)
    if current is not None and current.agent_id == agent.id:
        return
    if current is not None:
        current.ended_at = at
    session.add(CallSegment(call=call, agent=agent, started_at=at))


def _agent_leaves(call: Call, at: datetime) -> None:
    current = _open_segment(call)
    if current is not None:
        current.ended_at = at


def _open_segment(call: Call) -> CallSegment | None:
    return next((segment for segment in reversed(call.segments) if segment.ended_at is None), None)


def _handled_by(session: Session, ticket: Ticket, agent: User, since: datetime) -> None:
    """``agent`` handles the ticket (once); the first to take the contact owns it (首问负责制)."""
    if not any(handler.user_id == agent.id for handler in ticket.handlers):
        session.add(TicketHandler(ticket=ticket, user=agent, since=since))
    if ticket.owner_id is None:
        with acting_as(session, agent.id):
            ticket.owner_id = agent.id
            session.flush()
    session.flush()


def agent_segments(call: Call) -> list[dict[str, Any]]:
    """Who served the customer from when to when (``to`` None: still serving), in order.

    The recording's right channel holds each of them in turn; between two segments the caller
    waited (on hold music, or in a queue after a transfer to it).
    """
    return [{"agent": segment.agent.username, "from": segment.started_at, "to": segment.ended_at}
            for segment in call.segments]


def open_recording(session: Session, settings: Settings, call: Call, path: str, *, sample_rate: int = 8000,
                   channels: int = 2, at: datetime | None = None) -> Recording:
    """The call's recording being written at ``path``; once per call and path."""
    existing = recording_of(session, call, path)
    if existing is not None:
        return existing
    recording = Recording(call=call, path=path, sample_rate=sample_rate, channels=channels,
                          state=RecordingState.RECORDING, started_at=at or utcnow())
    session.add(recording)
    session.flush()
    return recording


def recording_of(session: Session, call: Call, path: str) -> Recording | None:
    return session.scalar(select(Recording).where(Recording.call_id == call.id, Recording.path == path))


def close_recording(session: Session, settings: Settings, recording: Recording, *, duration: float, sha256: str,
                    size_bytes: int, state: RecordingState = RecordingState.COMPLETE, error: str | None = None,
                    gap_seconds: float = 0.0, longest_gap_seconds: float = 0.0,
                    at: datetime | None = None) -> None:
    """Seal the recording, once: a sealed one is left as it is.

    ``gap_seconds``: time the media clock lost, written as silence (the flow alarms on long gaps).
    """
    if recording.state is not RecordingState.RECORDING:
        return
    recording.duration = duration
    recording.sha256 = sha256
    recording.size_bytes = size_bytes
    recording.state = state
    recording.error = error
    recording.gap_seconds = gap_seconds
    recording.longest_gap_seconds = longest_gap_seconds
    recording.closed_at = at or utcnow()
    session.flush()


def ticket_for_call(session: Session, settings: Settings, call: Call, at: datetime | None = None) -> Ticket:
    """Link the call to the customer's open ticket, or open a new one filled from their record; once.

    ``at`` dates the link on the ticket's trail (the call's end, as reported).
    """
    if call.ticket is not None:
        return call.ticket
    ticket = call.callback.ticket if call.callback is not None else None  # a revisit belongs to its ticket
    if ticket is None and call.customer_id:
        ticket = open_ticket_of(session, call.customer_id)
    if ticket is None:
        ticket = create_ticket(
            session, settings, ticket_type=TicketType.INQUIRY, customer=call.customer, phone=call.caller_id,
            description=f"来电 {call.caller_id} → {call.callee}", now=call.ring_at,
        )
    call.ticket = ticket
    # Not add_note: the link is dated when the call ended, however late it is written.
    session.add(TicketEvent(ticket=ticket, at=at or utcnow(), kind=EventKind.CALL_LINKED,
                            text=f"通话 #{call.id} ({call.direction.value}, {call.caller_id})",
                            data={"call_id": call.id}))
    for segment in call.segments:  # agents who took the call before the link (e.g. a staff-first callback)
        _handled_by(session, ticket, segment.agent, segment.started_at)
    session.flush()
    return ticket


def record_transfer(session: Session, call: Call, kind: TransferKind, from_: str, to: str,
                    at: datetime | None = None) -> CallTransfer:
    """The call passed on (once per call, kind, target and time): on the call and on its ticket's trail."""
    at = at or utcnow()
    done = session.scalar(select(CallTransfer).where(CallTransfer.call_id == call.id, CallTransfer.kind == kind,
                                                     CallTransfer.to == to, CallTransfer.at == at))
    if done is not None:
        return done
    transfer = CallTransfer(call=call, kind=kind, from_=from_, to=to, at=at)
    session.add(transfer)
    _agent_leaves(call, at)  # the next agent's segment (``mark_bridged``) starts here or when a queue gives them the caller
    if call.ticket is not None:
        session.add(TicketEvent(ticket=call.ticket, at=at, kind=EventKind.TRANSFERRED,
                                text=f"转接 {from_} → {to} ({kind.value})",
                                data={"call_id": call.id, "from": from_, "to": to, "kind": kind.value}))
    session.flush()
    return transfer


def supervised(session: Session, call: Call, extension: str, mode: SupervisionMode | None,
               at: datetime | None = None) -> CallSupervision | None:
    """The supervisor at ``extension`` joined in ``mode``, changed to it, or left (``mode`` None).

    Applied again, it changes nothing: a supervisor already in ``mode`` stays in the same row.
    """
    at = at or utcnow()
    current = next((row for row in reversed(call.supervisions)
                    if row.extension == extension and row.ended_at is None), None)
    if current is not None and current.mode is mode:
        return current
    if current is not None:
        current.ended_at = at
    row = None
    if mode is not None and call.state is not CallState.ENDED:
        supervisor = session.scalar(select(User).where(User.extension == extension))
        row = CallSupervision(call=call, supervisor=supervisor, extension=extension, mode=mode, started_at=at)
        session.add(row)
    session.flush()
    return row


def supervisions(call: Call) -> list[dict[str, Any]]:
    """Each supervisor's part in the call: who (user name, else extension), which mode, from when until when."""
    return [{"supervisor": row.supervisor.username if row.supervisor else row.extension, "mode": row.mode.value,
             "at": row.started_at, "until": row.ended_at} for row in call.supervisions]


def raise_alarm(session: Session, kind: AlarmKind, message: str, *, call: Call | None = None,
                source: str = "", at: datetime | None = None) -> Alarm:
    """An alarm; raised again with the same time (``at``), kind, message and call, it is the same alarm."""
    call_id = call.id if call else None
    if at is not None:
        existing = session.scalar(select(Alarm).where(
            Alarm.kind == kind, Alarm.raised_at == at, Alarm.call_id == call_id, Alarm.message == message,
        ))
        if existing is not None:
            return existing
    alarm = Alarm(kind=kind, message=message, call_id=call_id, source=source, raised_at=at or utcnow())
    session.add(alarm)
    session.flush()
    return alarm


def unfinished_calls(session: Session) -> list[Call]:
    """Calls not ended: at start-up, calls a killed process left (ringing, queued, with an agent)."""
    return list(session.scalars(select(Call).where(Call.ended_at.is_(None)).order_by(Call.id)))


def unfinished_recordings(session: Session) -> list[Recording]:
    """Recordings still marked as being written: their process died (repaired at start-up)."""
    return list(session.scalars(select(Recording).where(Recording.state == RecordingState.RECORDING)))
