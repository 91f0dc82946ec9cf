"""The callback list (回访列表): which callbacks a person sees, in what order, and the customer's history.

Supervisors and admins see every callback. Revisit staff see those assigned to them, and the
unassigned ones they can make: no skill needed, or one of their skills (a dialect) at its level;
a supervisor's callback (after 不满意) only when it is assigned to them. The rules of the
callbacks themselves are ``models.callbacks``'; this module only reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

from sqlalchemy import case, or_, select
from sqlalchemy.orm import Session, selectinload

from config import Settings
from models.agents import skill_levels
from models.call import Call
from models.callback import AttemptOutcome, Callback, CallbackAttempt, CallbackKind, CallbackMode, CallbackState
from models.callbacks import OPEN
from models.phone import normalize
from models.ticket import Ticket
from models.user import Role, User

# Who sees every callback, the supervisors' own included.
SEE_ALL = (Role.SUPERVISOR, Role.ADMIN)
# Who works callbacks from the list.
WORKERS = (Role.REVISIT, *SEE_ALL)
HISTORY_CALLS = 5
HISTORY_TICKETS = 10
SURVEY_RESULTS = 50


def visible_to(user: User, callback: Callback) -> bool:
    """Whether ``user`` may see and work ``callback`` from the list."""
    if user.role in SEE_ALL:
        return True
    if user.role is not Role.REVISIT:
        return False
    if callback.assignee_id is not None:
        return callback.assignee_id == user.id
    return callback.kind is not CallbackKind.SUPERVISOR and has_skill(user, callback.skill)


def has_skill(user: User, skill: str | None) -> bool:
    """No skill needed, or the user has each one asked for at its level ("粤语", "粤语:2", "粤语:2,空调")."""
    if not skill:
        return True
    has = skill_levels(user.skills or [])
    return all(has.get(name, 0) >= level for name, level in skill_levels(skill.split(",")).items())


def _with_details(query: Any) -> Any:
    return query.options(selectinload(Callback.ticket), selectinload(Callback.customer),
                         selectinload(Callback.assignee), selectinload(Callback.attempt_rows))


def _candidates(query: Any, user: User) -> Any:
    """Narrow ``query`` in SQL as far as the rules allow; skills are checked on the rows."""
    if user.role in SEE_ALL:
        return query
    return query.where(or_(Callback.assignee_id == user.id,
                           Callback.assignee_id.is_(None) & (Callback.kind != CallbackKind.SUPERVISOR)))


def open_callbacks(session: Session, user: User) -> list[Callback]:
    """The open callbacks ``user`` sees: overdue first, then by deadline (``due_by``).

    Call ``models.callbacks.mark_due`` first, so due and overdue are the states of now.
    """
    overdue_first = case((Callback.state == CallbackState.OVERDUE, 0), else_=1)
    query = _candidates(select(Callback).where(Callback.state.in_(OPEN)), user) \
        .order_by(overdue_first, Callback.due_by, Callback.id)
    return [c for c in session.scalars(_with_details(query)) if visible_to(user, c)]


def survey_results(session: Session, user: User, limit: int = SURVEY_RESULTS) -> list[tuple[Callback, Call | None]]:
    """The latest finished automatic surveys ``user`` sees, each with the call that holds its recording."""
    query = _candidates(select(Callback).where(Callback.state == CallbackState.DONE,
                                               Callback.mode == CallbackMode.AUTO,
                                               Callback.satisfaction.is_not(None)), user) \
        .order_by(Callback.completed_at.desc(), Callback.id.desc())
    rows = session.scalars(_with_details(query).execution_options(yield_per=limit))
    results = list(islice((c for c in rows if visible_to(user, c)), limit))
    calls = calls_by_uid(session, [survey_call_uid(c) for c in results])
    return [(c, calls.get(survey_call_uid(c) or "")) for c in results]


def survey_call_uid(callback: Callback) -> str | None:
    """The call the answers were given on: the completed attempt's, else the one the answers name."""
    for attempt in reversed(callback.attempt_rows):
        if attempt.outcome is AttemptOutcome.COMPLETED and attempt.call_uid:
            return attempt.call_uid
    uid = (callback.survey_answers or {}).get("call_uid")
    return uid if isinstance(uid, str) else None


def calls_by_uid(session: Session, uids: Iterable[str | None]) -> dict[str, Call]:
    wanted = {uid for uid in uids if uid}
    if not wanted:
        return {}
    return {call.uid: call for call in session.scalars(select(Call).where(Call.uid.in_(wanted)))}


def attempts_with_calls(session: Session, callback: Callback) -> list[tuple[CallbackAttempt, Call | None]]:
    """The callback's attempts in order, each with its call (and so its recording) once it was dialled."""
    attempts = list(callback.attempt_rows)
    calls = calls_by_uid(session, [attempt.call_uid for attempt in attempts])
    return [(attempt, calls.get(attempt.call_uid or "")) for attempt in attempts]


def _same_customer(customer_column: Any, phone_column: Any, callback: Callback, settings: Settings) -> Any:
    """The rows of the callback's customer, and those of their numbers (a ticket opened by number alone)."""
    numbers = _numbers(callback, settings)
    if callback.customer_id is None:
        return phone_column.in_(numbers)
    return or_(customer_column == callback.customer_id, phone_column.in_(numbers))


def _numbers(callback: Callback, settings: Settings) -> set[str]:
    """The callback's number as dialled and in E.164 (as calls keep it), and the customer's numbers."""
    e164 = normalize(callback.phone, settings.general.phone_region)
    known = [phone.number for phone in callback.customer.phones] if callback.customer is not None else []
    return {callback.phone, *([e164] if e164 else []), *known}


def customer_calls(session: Session, settings: Settings, callback: Callback, limit: int = HISTORY_CALLS) -> list[Call]:
    """The customer's latest calls, either way (calls keep the customer's number as ``caller_id``)."""
    where = _same_customer(Call.customer_id, Call.caller_id, callback, settings)
    return list(session.scalars(select(Call).where(where).order_by(Call.ring_at.desc(), Call.id.desc()).limit(limit)))


def customer_tickets(session: Session, settings: Settings, callback: Callback,
                     limit: int = HISTORY_TICKETS) -> list[Ticket]:
    """The customer's latest tickets, open or not."""
    where = _same_customer(Ticket.customer_id, Ticket.phone, callback, settings)
    return list(session.scalars(select(Ticket).where(where)
                                .order_by(Ticket.created_at.desc(), Ticket.id.desc()).limit(limit)))
