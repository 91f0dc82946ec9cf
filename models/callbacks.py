"""The callback rules of the manuals, in one place: when each revisit is due, when it may be dialled, how it ends.

- A delivered result (ticket resolved) → the satisfaction revisit within 24 h (manuals 000, 001);
  a handled complaint → the complaint revisit within 7 days (manual 002); 不满意 or a score below
  4 of 5 → the supervisor within 2 h and the ticket flagged for improvement (manuals 000, 001);
  a caller promised a call back (manual 004) and a queued caller keeping their place (virtual hold).
- Calls are placed only inside calling hours in the customer's time zone, never on the working
  calendar's holidays, never to the do-not-call list; a due time outside the hours moves to the
  next allowed moment, and a callback that cannot fit its window is flagged (and called at the
  first allowed moment all the same).
- Each attempt is claimed with one conditional UPDATE plus a row unique per (callback, attempt
  number) before anything is dialled: whoever runs the job twice, only one dials. No answer, busy,
  failed: tried again after ``retry_minutes`` up to ``max_attempts``, then unreachable.

Every function takes the time as ``now`` so a week of rules can be simulated in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_timezones
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from config import Settings
from config.defaults import dialable
from models.base import utcnow
from models.callback import (
    AttemptOutcome, Callback, CallbackAttempt, CallbackKind, CallbackMode, CallbackState, Satisfaction,
)
from models.call import Call, CallDirection
from models.directory import customer_for_number
from models.phone import normalize
from models.queue import Queue
from models.ticket import EventKind, Ticket, TicketStatus, TicketType
from models.ticketing import add_note, change_ticket

WAITING = (CallbackState.SCHEDULED, CallbackState.DUE, CallbackState.OVERDUE)  # for its next attempt
OPEN = (*WAITING, CallbackState.DIALLING, CallbackState.IN_CALL)
# Worth another attempt later; anything else not completed ends the callback.
RETRIED = {AttemptOutcome.NO_ANSWER, AttemptOutcome.BUSY, AttemptOutcome.FAILED, AttemptOutcome.HUNG_UP,
           AttemptOutcome.NO_INPUT, AttemptOutcome.ANSWERING_MACHINE, AttemptOutcome.ABANDONED}
# Not the customer's fault: the attempt does not count against ``max_attempts``.
NOT_COUNTED = {AttemptOutcome.STAFF_UNAVAILABLE}
KEYS = {"1": Satisfaction.VERY_SATISFIED, "2": Satisfaction.SATISFIED, "3": Satisfaction.NEUTRAL,
        "4": Satisfaction.DISSATISFIED}
# The four answers on the manual's five-point scale (below 4 starts the improvement process).
SCORES = {Satisfaction.VERY_SATISFIED: 5, Satisfaction.SATISFIED: 4, Satisfaction.NEUTRAL: 3,
          Satisfaction.DISSATISFIED: 2}
LABELS = {Satisfaction.VERY_SATISFIED: "非常满意", Satisfaction.SATISFIED: "满意", Satisfaction.NEUTRAL: "一般",
          Satisfaction.DISSATISFIED: "不满意"}
SEARCH_DAYS = 400  # a calendar with no allowed day within a year is a configuration error
# A job that comes this early (RQ's scheduler looks every second) is dialled all the same.
EARLY_TOLERANCE = timedelta(seconds=1)


# A kept place's outcome when its customer called again and an agent took the call.
SERVED_LIVE = "served_live"
# A callback's outcome when staff took the customer's answers another way (the customer called in).
ANSWERED_OTHERWISE = "answered_otherwise"


class CallbackError(ValueError):
    """A callback cannot be made or changed as asked; the message says why.

    ``template`` (a catalogue message with %(name)s fields) and ``params`` let the web UI say it in
    the user's language; ``str()`` is the English.
    """

    def __init__(self, template: str, **params: object) -> None:
        self.template, self.params = template, params
        super().__init__(template % params if params else template)


# --- calling hours ------------------------------------------------------------------------------

def customer_zone(phone: str, settings: Settings) -> ZoneInfo:
    """The customer's time zone from their number when it has exactly one, else the team's."""
    try:
        number = phonenumbers.parse(phone, settings.general.phone_region)
        zones = [z for z in phone_timezones.time_zones_for_number(number) if z != "Etc/Unknown"]
    except phonenumbers.NumberParseException:
        zones = []
    return ZoneInfo(zones[0] if len(zones) == 1 else settings.general.timezone)


def next_allowed(moment: datetime, settings: Settings, zone: ZoneInfo) -> datetime:
    """The first moment at or after ``moment`` inside calling hours, on a day that is not a holiday."""
    rules = settings.callbacks
    local = moment.astimezone(zone)
    for _ in range(SEARCH_DAYS):
        opens = _local_at(local, rules.calling_hours_start, zone)
        closes = _local_at(local, rules.calling_hours_end, zone)
        if local.date() not in settings.general.holidays and local < closes:
            return max(local, opens).astimezone(moment.tzinfo)
        local = _local_at(local + timedelta(days=1), time(0, 0), zone)
    raise CallbackError("no day within a year has calling hours: check callbacks.calling_hours_* and general.holidays")


def is_allowed(moment: datetime, settings: Settings, zone: ZoneInfo) -> bool:
    return next_allowed(moment, settings, zone) == moment


def _local_at(day: datetime, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day.date(), at, tzinfo=zone)


def placed(earliest: datetime, latest: datetime, now: datetime, settings: Settings,
           zone: ZoneInfo) -> tuple[datetime, str | None]:
    """When to dial inside the window, and a flag when no allowed moment is left in it."""
    at = next_allowed(max(earliest, now), settings, zone)
    if at <= latest:
        return at, None
    hours = f"{settings.callbacks.calling_hours_start:%H:%M}-{settings.callbacks.calling_hours_end:%H:%M}"
    return at, (f"无法在时限内拨打 / cannot be called inside its window (calling hours {hours} {zone.key}): "
                f"first allowed moment {at.astimezone(zone).isoformat()}")


# --- scheduling ---------------------------------------------------------------------------------

def window_for(kind: CallbackKind, settings: Settings, start: datetime) -> tuple[datetime, datetime]:
    rules = settings.callbacks
    length = {
        CallbackKind.SATISFACTION: timedelta(hours=rules.satisfaction_hours),
        CallbackKind.COMPLAINT: timedelta(days=rules.complaint_revisit_days),
        CallbackKind.SUPERVISOR: timedelta(hours=rules.supervisor_hours),
        CallbackKind.CUSTOMER_REQUESTED: timedelta(hours=rules.customer_requested_hours),
        CallbackKind.VIRTUAL_HOLD: timedelta(hours=rules.customer_requested_hours),
    }[kind]
    return start, start + length


def mode_for(kind: CallbackKind, settings: Settings) -> CallbackMode:
    if kind is CallbackKind.VIRTUAL_HOLD:
        return CallbackMode.STAFF  # an agent is reserved and rung first
    return CallbackMode(getattr(settings.callbacks, f"{kind.value}_mode"))


def check_phone(phone: str) -> str:
    """The number as given without formatting noise; CallbackError when it cannot be dialled."""
    cleaned = dialable(phone)
    if cleaned is None:
        raise CallbackError("invalid number %(phone)r: digits, an optional leading +", phone=phone)
    return cleaned


def schedule(session: Session, settings: Settings, *, kind: CallbackKind, phone: str, ticket: Ticket | None = None,
             earliest: datetime | None = None, latest: datetime | None = None, mode: CallbackMode | None = None,
             skill: str | None = None, assignee_id: int | None = None, actor_id: int | None = None,
             now: datetime | None = None) -> Callback:
    """A callback, or the open one of the same kind for the same ticket (or phone, without a ticket): merged."""
    now = now or utcnow()
    phone = check_phone(phone)
    start, end = window_for(kind, settings, earliest or now)
    latest = latest or end
    if latest < start:
        raise CallbackError("the window ends before it starts")
    same = _open_same(session, kind, ticket, phone)
    if same is not None:
        same.due_from, same.due_by = min(same.due_from, start), min(same.due_by, latest)
        _place_next(same, settings, now)
        session.flush()
        return same
    previous = session.scalar(select(func.count(Callback.id)).where(Callback.kind == kind,
                                                                    _same_target(ticket, phone))) or 0
    customer = ticket.customer if ticket is not None and ticket.customer else \
        customer_for_number(session, normalize(phone, settings.general.phone_region))
    callback = Callback(
        kind=kind, state=CallbackState.SCHEDULED, mode=mode or mode_for(kind, settings),
        dedupe_key=f"{kind.value}:{f'ticket {ticket.id}' if ticket is not None else phone}:{previous + 1}",
        ticket=ticket, customer=customer, phone=phone, due_from=start, due_by=latest, skill=skill,
        assignee_id=assignee_id, created_at=now,
    )
    _place_next(callback, settings, now)
    session.add(callback)
    session.flush()
    if ticket is not None:
        add_note(session, ticket, f"回访已安排 / callback scheduled: {kind.value}, {callback.phone}, "
                                  f"{start.isoformat()} – {latest.isoformat()}", actor_id=actor_id,
                 kind=EventKind.CALLBACK, data={"callback_id": callback.id})
    return callback


def _same_target(ticket: Ticket | None, phone: str) -> Any:
    return Callback.ticket_id == ticket.id if ticket is not None else (Callback.phone == phone) & Callback.ticket_id.is_(None)


def _open_same(session: Session, kind: CallbackKind, ticket: Ticket | None, phone: str) -> Callback | None:
    return session.scalar(select(Callback).where(Callback.kind == kind, Callback.state.in_(OPEN),
                                                 _same_target(ticket, phone)).limit(1))


def _place_next(callback: Callback, settings: Settings, earliest: datetime) -> None:
    at, flag = placed(max(earliest, callback.due_from), callback.due_by, earliest, settings,
                      customer_zone(callback.phone, settings))
    callback.next_attempt_at, callback.flag = at, flag


def keep_place(session: Session, settings: Settings, *, phone: str, queue_id: int | None, queued_at: datetime,
               now: datetime | None = None) -> Callback:
    """Virtual hold: the caller keeps their place in the queue (the earliest, if they call again and keep it again)."""
    callback = schedule(session, settings, kind=CallbackKind.VIRTUAL_HOLD, phone=phone, now=now)
    if callback.queued_at is None or queued_at < callback.queued_at:
        callback.queue_id, callback.queued_at = queue_id, queued_at
    session.flush()
    return callback


def kept_places(session: Session) -> list[Callback]:
    """Virtual-hold callbacks waiting for their turn, in the order their callers joined the queue."""
    return list(session.scalars(select(Callback).where(Callback.kind == CallbackKind.VIRTUAL_HOLD,
                                                      Callback.state.in_(WAITING))
                                .order_by(Callback.queued_at, Callback.id)))


def served_live(session: Session, settings: Settings, phone: str) -> list[int]:
    """The customer called again and an agent took the call: the places they kept (virtual hold) are
    cancelled, so nobody calls back a customer already served. The ids of those cancelled."""
    try:
        caller = comparable(phone, settings)
    except CallbackError:
        return []  # no number to match (anonymous): no kept place is theirs
    cancelled = []
    for callback in kept_places(session):
        if comparable(callback.phone, settings) == caller:
            give_up(session, callback, CallbackState.CANCELLED, reason=SERVED_LIVE)
            cancelled.append(callback.id)
    return cancelled


def resolve_ticket(session: Session, settings: Settings, ticket: Ticket, note: str, *, actor_id: int | None = None,
                   now: datetime | None = None) -> Callback:
    """The result is delivered: the ticket is resolved and its revisit scheduled (complaints: the complaint revisit)."""
    if ticket.status is TicketStatus.CLOSED:
        raise CallbackError("ticket %(number)s is closed", number=ticket.number)
    if not note.strip():
        raise CallbackError("a resolution note is required (处理结果)")
    now = now or utcnow()
    phone = caller_of(session, ticket)
    if ticket.status is not TicketStatus.RESOLVED:
        change_ticket(session, settings, ticket, actor_id, status=TicketStatus.RESOLVED)
    add_note(session, ticket, f"处理结果 / result: {note}", actor_id=actor_id)
    kind = CallbackKind.COMPLAINT if ticket.type is TicketType.COMPLAINT else CallbackKind.SATISFACTION
    return schedule(session, settings, kind=kind, phone=phone, ticket=ticket, actor_id=actor_id, now=now,
                    skill=skills_of_caller(session, ticket))


def skills_of_caller(session: Session, ticket: Ticket) -> str | None:
    """The skills of the queue the customer last called into (a dialect queue's 粤语:2 …), for the staff
    who call them back; None when they need none."""
    skills = session.scalar(select(Queue.skills).join(Call, Call.queue_id == Queue.id)
                            .where(Call.ticket_id == ticket.id, Call.direction == CallDirection.INBOUND)
                            .order_by(Call.ring_at.desc()).limit(1))
    return ",".join(str(skill) for skill in skills) if skills else None


def caller_of(session: Session, ticket: Ticket) -> str:
    """The number the customer called from (their last inbound call on the ticket), else the ticket's phone."""
    raw = session.scalar(select(Call.caller_raw).where(Call.ticket_id == ticket.id,
                                                       Call.direction == CallDirection.INBOUND)
                         .order_by(Call.ring_at.desc()).limit(1))
    number = raw or ticket.phone
    if not number:
        raise CallbackError("ticket %(number)s has no phone number to call back", number=ticket.number)
    return number


# --- attempts -----------------------------------------------------------------------------------

def claim(session: Session, callback_id: int, number: int, *, by: str, now: datetime | None = None) -> CallbackAttempt | None:
    """Claim attempt ``number``: None when someone else has it, or the callback is no longer waiting."""
    now = now or utcnow()
    due_at = session.scalar(select(Callback.next_attempt_at).where(Callback.id == callback_id))
    moved = session.execute(
        update(Callback).where(Callback.id == callback_id, Callback.attempts == number - 1,
                               Callback.state.in_(WAITING))
        .values(state=CallbackState.DIALLING, attempts=number, last_attempt_at=now)
        .execution_options(synchronize_session=False))
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return None
    attempt = CallbackAttempt(callback_id=callback_id, number=number, claimed_by=by, claimed_at=now, due_at=due_at)
    session.add(attempt)
    session.flush()
    return attempt


@dataclass
class Start:
    """What became of a dialler job: the attempt to dial, or why not (and when to come again)."""

    attempt: CallbackAttempt | None
    why: str
    again_at: datetime | None = None


def start_attempt(session: Session, settings: Settings, callback_id: int, number: int, *, by: str,
                  staff_id: int | None = None, now: datetime | None = None) -> Start:
    """The rules before a dial: still waiting, its time, calling hours, the claim, numbers never dialled."""
    now = now or utcnow()
    callback = session.get(Callback, callback_id)
    if callback is None or callback.state not in WAITING or callback.attempts != number - 1:
        return Start(None, "not waiting for this attempt")
    if callback.mode is CallbackMode.STAFF and staff_id is None:
        return Start(None, "a staff callback: dialled when a person calls it from the list")
    assert callback.next_attempt_at is not None
    if staff_id is None and callback.next_attempt_at > now + EARLY_TOLERANCE:
        return Start(None, "not due yet", callback.next_attempt_at)
    if not is_allowed(now, settings, customer_zone(callback.phone, settings)):
        callback.state = CallbackState.SCHEDULED
        _place_next(callback, settings, now)
        return Start(None, "outside calling hours", callback.next_attempt_at)
    attempt = claim(session, callback_id, number, by=by, now=now)
    if attempt is None:
        return Start(None, "claimed by another process")
    refused = refusal(callback, settings)
    if refused is not None:
        finish_attempt(session, settings, attempt, refused, now=now)
        return Start(None, refused.value)
    return Start(attempt, "dialling")


def dial_now(session: Session, settings: Settings, callback: Callback, *, now: datetime | None = None) -> int:
    """A person asks for the callback now ("call now", ``hotline callbacks dial``): the attempt number to run."""
    if callback.state not in WAITING:
        raise CallbackError("callback %(id)d is %(state)s: nothing to dial", id=callback.id, state=callback.state.value)
    now = now or utcnow()
    if not is_allowed(now, settings, customer_zone(callback.phone, settings)):
        raise CallbackError("outside calling hours or on a holiday: reschedule it instead")
    callback.next_attempt_at, callback.state = now, CallbackState.DUE
    session.flush()
    return callback.attempts + 1


def refusal(callback: Callback, settings: Settings) -> AttemptOutcome | None:
    """Why this callback must not be dialled at all, if it must not."""
    try:
        phone = check_phone(callback.phone)
    except CallbackError:
        return AttemptOutcome.INVALID_NUMBER
    barred = {comparable(number, settings) for number in settings.callbacks.do_not_call}
    return AttemptOutcome.DO_NOT_CALL if comparable(phone, settings) in barred else None


def comparable(number: str, settings: Settings) -> str:
    """One form per number, so 13800138000 and +86 138-0013-8000 match (an extension stays as it is)."""
    return normalize(number, settings.general.phone_region) or check_phone(number)


def dialled(session: Session, attempt: CallbackAttempt, call_uid: str, *, staff_id: int | None = None,
            now: datetime | None = None) -> None:
    attempt.dialled_at, attempt.call_uid, attempt.staff_id = now or utcnow(), call_uid, staff_id
    session.flush()


def answered(session: Session, attempt: CallbackAttempt) -> None:
    session.execute(update(Callback).where(Callback.id == attempt.callback_id, Callback.state == CallbackState.DIALLING)
                    .values(state=CallbackState.IN_CALL).execution_options(synchronize_session=False))
    session.flush()


def finish_attempt(session: Session, settings: Settings, attempt: CallbackAttempt, outcome: AttemptOutcome, *,
                   machine: bool = False, now: datetime | None = None) -> Callback:
    """The attempt is over: the callback is done, tried again later, or unreachable."""
    now = now or utcnow()
    callback = session.get_one(Callback, attempt.callback_id)
    session.refresh(callback)
    attempt.outcome, attempt.ended_at, attempt.answering_machine = outcome, now, machine
    callback.outcome = outcome.value
    if callback.state not in (CallbackState.DIALLING, CallbackState.IN_CALL):
        session.flush()  # cancelled or marked meanwhile: the person's word stands
        return callback
    if outcome is AttemptOutcome.COMPLETED:
        callback.state, callback.completed_at = CallbackState.DONE, now
    elif outcome in NOT_COUNTED:
        callback.state = CallbackState.DUE
    elif outcome in RETRIED and counted_attempts(session, callback) < settings.callbacks.max_attempts:
        callback.state = CallbackState.SCHEDULED
        _place_next(callback, settings, now + timedelta(minutes=settings.callbacks.retry_minutes))
    else:
        callback.state = CallbackState.UNREACHABLE
    session.flush()
    if callback.ticket is not None:
        add_note(session, callback.ticket, f"回访第{attempt.number}次 / callback attempt {attempt.number}: "
                                           f"{outcome.value} → {callback.state.value}",
                 kind=EventKind.CALLBACK, data={"callback_id": callback.id, "attempt": attempt.number,
                                                "call_uid": attempt.call_uid})
    return callback


def counted_attempts(session: Session, callback: Callback) -> int:
    outcomes = session.scalars(select(CallbackAttempt.outcome).where(CallbackAttempt.callback_id == callback.id)).all()
    return sum(1 for outcome in outcomes if outcome not in NOT_COUNTED)


def record_answers(session: Session, settings: Settings, callback: Callback, *, satisfaction: Satisfaction,
                   score: int | None = None, answers: dict[str, Any] | None = None, actor_id: int | None = None,
                   now: datetime | None = None) -> Callback | None:
    """The customer's answers on the callback and its ticket; a low score → improvement and the supervisor's callback."""
    now = now or utcnow()
    score = SCORES[satisfaction] if score is None else score
    if not 1 <= score <= 5:
        raise CallbackError("a score is a whole number from 1 to 5")
    callback.satisfaction, callback.score = satisfaction, score
    callback.survey_answers = {**(callback.survey_answers or {}), **(answers or {})}
    session.flush()
    ticket = callback.ticket
    if ticket is None:
        return None
    add_note(session, ticket, f"回访结果 / revisit: {LABELS[satisfaction]} ({score}/5)"
                              + "".join(f"; {k}: {v}" for k, v in (answers or {}).items() if isinstance(v, str) and v),
             actor_id=actor_id, kind=EventKind.CALLBACK,
             data={"callback_id": callback.id, "satisfaction": satisfaction.value, "score": score})
    if satisfaction is not Satisfaction.DISSATISFIED and score >= settings.callbacks.improvement_score_below:
        return None
    if ticket.improvement_flagged_at is None:
        ticket.improvement_flagged_at = now
        add_note(session, ticket, f"需改进 / improvement process: {LABELS[satisfaction]}, {score}/5",
                 actor_id=actor_id, kind=EventKind.IMPROVEMENT, data={"callback_id": callback.id})
    return schedule(session, settings, kind=CallbackKind.SUPERVISOR, phone=callback.phone, ticket=ticket,
                    actor_id=actor_id, now=now, skill=callback.skill)


def answered_otherwise(session: Session, callback: Callback, *, actor_id: int | None = None,
                       now: datetime | None = None) -> Callback:
    """The customer gave their answers another way (they called in, staff reached them otherwise): done,
    and nobody dials them for it again."""
    if callback.state not in WAITING:
        raise CallbackError("callback %(id)d is %(state)s: only a waiting one is closed this way", id=callback.id,
                            state=callback.state.value)
    callback.state, callback.outcome, callback.completed_at = CallbackState.DONE, ANSWERED_OTHERWISE, now or utcnow()
    _trail(session, callback, f"回访已完成（其他方式） / {ANSWERED_OTHERWISE}", actor_id)
    return callback


# --- staff and supervisors ----------------------------------------------------------------------

def reschedule(session: Session, settings: Settings, callback: Callback, at: datetime, *,
               actor_id: int | None = None) -> Callback:
    """Move the next attempt to ``at``: inside the window and inside calling hours, else refused."""
    if callback.state not in WAITING:
        raise CallbackError("callback %(id)d is %(state)s: only a waiting callback is rescheduled", id=callback.id,
                            state=callback.state.value)
    if not callback.due_from <= at <= callback.due_by:
        raise CallbackError("%(at)s is outside the window %(start)s – %(end)s", at=at.isoformat(),
                            start=callback.due_from.isoformat(), end=callback.due_by.isoformat())
    if not is_allowed(at, settings, customer_zone(callback.phone, settings)):
        raise CallbackError("%(at)s is outside calling hours or on a holiday", at=at.isoformat())
    callback.next_attempt_at, callback.state, callback.flag = at, CallbackState.SCHEDULED, None
    _trail(session, callback, f"回访改期 / rescheduled to {at.isoformat()}", actor_id)
    return callback


def give_up(session: Session, callback: Callback, state: CallbackState, *, reason: str = "",
            actor_id: int | None = None) -> Callback:
    """Staff mark it unreachable, or someone cancels it."""
    if state not in (CallbackState.UNREACHABLE, CallbackState.CANCELLED):
        raise CallbackError("a callback is given up as unreachable or cancelled, not %(state)s", state=state.value)
    if callback.state not in OPEN:
        raise CallbackError("callback %(id)d is already %(state)s", id=callback.id, state=callback.state.value)
    callback.state, callback.outcome = state, reason or state.value
    _trail(session, callback, f"回访{'无法联系' if state is CallbackState.UNREACHABLE else '取消'} / {state.value}"
                              + (f": {reason}" if reason else ""), actor_id)
    return callback


def _trail(session: Session, callback: Callback, text: str, actor_id: int | None) -> None:
    session.flush()
    if callback.ticket is not None:
        add_note(session, callback.ticket, text, actor_id=actor_id, kind=EventKind.CALLBACK,
                 data={"callback_id": callback.id})


def mark_due(session: Session, now: datetime | None = None) -> int:
    """Scheduled callbacks whose time has come become due; waiting ones past their window overdue."""
    now = now or utcnow()
    due = session.execute(update(Callback).where(Callback.state == CallbackState.SCHEDULED,
                                                 Callback.next_attempt_at <= now)
                          .values(state=CallbackState.DUE).execution_options(synchronize_session=False))
    late = session.execute(update(Callback).where(Callback.state.in_((CallbackState.SCHEDULED, CallbackState.DUE)),
                                                  Callback.due_by < now)
                           .values(state=CallbackState.OVERDUE).execution_options(synchronize_session=False))
    return due.rowcount + late.rowcount  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DueAttempt:
    callback_id: int
    number: int  # the attempt to make
    at: datetime


def automatic_due(session: Session, until: datetime) -> list[DueAttempt]:
    """The next attempts of automatic callbacks due by ``until`` (the reconciler's work), oldest first.

    Plain tuples, not rows: the reconciler reads thousands every few seconds inside ``hotline sip``,
    whose media clock shares the interpreter.
    """
    rows = session.execute(select(Callback.id, Callback.attempts, Callback.next_attempt_at).where(
        Callback.mode == CallbackMode.AUTO, Callback.state.in_(WAITING), Callback.next_attempt_at <= until)
        .order_by(Callback.next_attempt_at))
    return [DueAttempt(callback_id, attempts + 1, at) for callback_id, attempts, at in rows]


def due_now(callback: Callback, now: datetime | None = None) -> DueAttempt | None:
    """The automatic attempt due now, to hand to RQ at once (anything later the reconciler hands on in time)."""
    at = callback.next_attempt_at
    if callback.mode is not CallbackMode.AUTO or callback.state not in WAITING or at is None or at > (now or utcnow()):
        return None
    return DueAttempt(callback.id, callback.attempts + 1, at)


def stale_attempts(session: Session, before: datetime) -> list[CallbackAttempt]:
    """Attempts claimed before ``before`` that their process left: never dialled, or their call is over.

    The process that claims an attempt ends it when its call ends; one killed meanwhile leaves it
    open (its call row is ended by the restart's repair). The reconciler ends these as abandoned.
    """
    call_over = select(Call.id).where(Call.uid == CallbackAttempt.call_uid, Call.ended_at.is_not(None)).exists()
    return list(session.scalars(select(CallbackAttempt).join(CallbackAttempt.callback).where(
        CallbackAttempt.ended_at.is_(None), CallbackAttempt.claimed_at < before,
        Callback.state.in_((CallbackState.DIALLING, CallbackState.IN_CALL)),
        CallbackAttempt.call_uid.is_(None) | call_over)))


# --- reading ------------------------------------------------------------------------------------

def callback_as_dict(callback: Callback, settings: Settings) -> dict[str, Any]:
    """The public JSON form (``hotline callbacks list --json``): times in ISO 8601 with the team's offset."""
    zone = ZoneInfo(settings.general.timezone)

    def local(at: datetime | None) -> str | None:
        return at.astimezone(zone).isoformat() if at is not None else None

    return {
        "id": callback.id, "ticket": callback.ticket.number if callback.ticket else None,
        "kind": callback.kind.value, "phone": callback.phone, "earliest": local(callback.due_from),
        "latest": local(callback.due_by), "mode": callback.mode.value, "state": callback.state.value,
        "attempts": callback.attempts, "outcome": callback.outcome,
        "satisfaction": callback.satisfaction.value if callback.satisfaction else None, "score": callback.score,
        "next_attempt_at": local(callback.next_attempt_at), "skill": callback.skill,
        "assignee": callback.assignee.username if callback.assignee else None, "flag": callback.flag,
        "answers": callback.survey_answers,
    }
