"""The call log: each call's row, its recording and its ticket, as telephony reports them.

Telephony calls these functions; the web UI and the workers read what they write.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import logging

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from config import Settings
from models.alarm import Alarm, AlarmKind
from models.audit import acting_as
from models.base import utcnow
from models.call import Call, CallDirection, CallOutcome, CallState, HangupParty
from models.directory import customer_for_number
from models.phone import normalize
from models.recording import Recording, RecordingState
from models.ticket import EventKind, Ticket, TicketType
from models.ticketing import add_note, create_ticket, open_ticket_of
from models.user import User

log = logging.getLogger(__name__)


def log_inbound(session: Session, settings: Settings, *, caller: str, callee: str, sip_call_id: str,
                at: datetime | None = None) -> Call:
    """A ringing inbound call, matched to its customer by caller ID and chained to their last call."""
    return _log(session, settings, CallDirection.INBOUND, customer_number=caller, callee=callee,
                sip_call_id=sip_call_id, at=at)


def log_outbound(session: Session, settings: Settings, *, number: str, caller: str, sip_call_id: str,
                 at: datetime | None = None, callback_id: int | None = None) -> Call:
    """An outbound call to a customer (callbacks); caller_id still names the customer's number."""
    call = _log(session, settings, CallDirection.OUTBOUND, customer_number=number, callee=caller,
                sip_call_id=sip_call_id, at=at)
    call.callback_id = callback_id
    return call


def _log(session: Session, settings: Settings, direction: CallDirection, *, customer_number: str, callee: str,
         sip_call_id: str, at: datetime | None) -> Call:
    e164 = normalize(customer_number, settings.general.phone_region)
    customer = customer_for_number(session, e164)
    previous = None
    if customer is not None:
        previous = session.scalar(
            select(Call).where(Call.customer_id == customer.id).order_by(Call.ring_at.desc(), Call.id.desc()).limit(1)
        )
    call = Call(
        direction=direction, state=CallState.RINGING, sip_call_id=sip_call_id,
        caller_id=e164 or customer_number, caller_raw=customer_number, callee=callee,
        customer=customer, previous_call=previous, ring_at=at or utcnow(),
    )
    session.add(call)
    session.flush()
    return call


# The timestamp column each state sets when the call first reaches it.
STATE_TIMESTAMPS = {
    CallState.GREETING: "answered_at",
    CallState.QUEUED: "queued_at",
    CallState.BRIDGED: "bridged_at",
    CallState.ENDED: "ended_at",
}


def mark_state(session: Session, call: Call, state: CallState, at: datetime | None = None) -> None:
    call.state = state
    column = STATE_TIMESTAMPS.get(state)
    if column and getattr(call, column) is None:
        setattr(call, column, at or utcnow())
    session.flush()


def mark_answered(session: Session, call: Call, at: datetime | None = None) -> None:
    mark_state(session, call, CallState.GREETING, at)


def mark_ended(session: Session, call: Call, *, outcome: CallOutcome, hangup_by: HangupParty,
               at: datetime | None = None) -> None:
    call.outcome = outcome
    call.hangup_by = hangup_by
    mark_state(session, call, CallState.ENDED, at)


def mark_bridged(session: Session, call: Call, agent: User, at: datetime | None = None) -> None:
    """The agent took the call; the first agent to take the contact owns its ticket (首问负责制)."""
    call.agent = agent
    mark_state(session, call, CallState.BRIDGED, at)
    if call.ticket is not None and call.ticket.owner_id is None:
        with acting_as(session, agent.id):
            call.ticket.owner_id = agent.id
            session.flush()


def open_recording(session: Session, settings: Settings, call: Call, path: str, *, sample_rate: int = 8000,
                   channels: int = 2) -> Recording:
    """A recording being written; once this commits, live transcription follows it (if enabled)."""
    recording = Recording(call=call, path=path, sample_rate=sample_rate, channels=channels,
                          state=RecordingState.RECORDING)
    session.add(recording)
    session.flush()
    _after_commit(session, lambda: _enqueue("enqueue_live_transcription", settings, recording.id))
    return recording


def close_recording(session: Session, settings: Settings, recording: Recording, *, duration: float, sha256: str,
                    size_bytes: int, state: RecordingState = RecordingState.COMPLETE,
                    error: str | None = None) -> None:
    """Seal the recording; a usable one is queued for transcription once this commits."""
    recording.duration = duration
    recording.sha256 = sha256
    recording.size_bytes = size_bytes
    recording.state = state
    recording.error = error
    recording.closed_at = utcnow()
    session.flush()
    if state in (RecordingState.COMPLETE, RecordingState.REPAIRED):
        _after_commit(session, lambda: _enqueue("enqueue_transcription", settings, recording.id))


def _enqueue(job: str, settings: Settings, recording_id: int) -> None:
    """Queue a transcription job; Redis being down costs the notes' timing, never the call."""
    # Imported late: workers depend on models, not the other way round at import time.
    from workers import dispatch

    try:
        getattr(dispatch, job)(settings, recording_id)
    except Exception:  # the recording stays pending: `hotline transcribe --since` catches up
        log.exception("recording %s: %s failed", recording_id, job)


def _after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` once the session's transaction commits (a job must see committed rows)."""
    event.listen(session, "after_commit", lambda _s: action(), once=True)


def ticket_for_call(session: Session, settings: Settings, call: Call) -> Ticket:
    """Link the call to the customer's open ticket, or open a new one filled from their record."""
    ticket = open_ticket_of(session, call.customer_id) if call.customer_id else None
    if ticket is None:
        ticket = create_ticket(
            session, settings, ticket_type=TicketType.INQUIRY, customer=call.customer, phone=call.caller_id,
            description=f"来电 {call.caller_id} → {call.callee}", now=call.ring_at,
        )
    call.ticket = ticket
    add_note(session, ticket, f"通话 #{call.id} ({call.direction.value}, {call.caller_id})",
             kind=EventKind.CALL_LINKED, data={"call_id": call.id})
    return ticket


def raise_alarm(session: Session, kind: AlarmKind, message: str, *, call: Call | None = None,
                source: str = "") -> Alarm:
    alarm = Alarm(kind=kind, message=message, call_id=call.id if call else None, source=source)
    session.add(alarm)
    session.flush()
    return alarm


def unfinished_recordings(session: Session) -> list[Recording]:
    """Recordings still marked as being written: their process died (repaired at start-up)."""
    return list(session.scalars(select(Recording).where(Recording.state == RecordingState.RECORDING)))
