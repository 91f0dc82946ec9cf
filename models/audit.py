"""The audit trail: every change to a ticket writes an event; tickets and events are never deleted.

It hooks the ORM's flush, so no code path can change a ticket without leaving a trace; the
database triggers of the first migration refuse deletes that bypass the ORM.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from enum import Enum
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from models.ticket import EventKind, Ticket, TicketEvent

# Fields whose change is not itself news: bookkeeping written alongside other events.
UNAUDITED = {"id", "number", "created_at"}


class ImmutableRecordError(Exception):
    """Raised on an attempt to delete a ticket or an event, or to alter an event."""


@contextmanager
def acting_as(session: Session, user_id: int | None) -> Iterator[None]:
    """Attribute the changes flushed inside the block to a user (None: the system)."""
    previous = session.info.get("actor_id")
    session.info["actor_id"] = user_id
    try:
        yield
    finally:
        session.info["actor_id"] = previous


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def _change_events(ticket: Ticket, actor_id: int | None) -> Iterator[TicketEvent]:
    state = inspect(ticket)
    for attr in state.mapper.column_attrs:
        if attr.key in UNAUDITED:
            continue
        history = state.attrs[attr.key].history
        if not history.has_changes() or not history.deleted:
            continue
        old, new = history.deleted[0], history.added[0] if history.added else None
        if _text(old) == _text(new):
            continue
        yield TicketEvent(
            ticket=ticket, actor_id=actor_id, kind=EventKind.CHANGED,
            field=attr.key, old_value=_text(old), new_value=_text(new),
        )


@event.listens_for(Session, "before_flush")
def _audit(session: Session, flush_context: Any, instances: Any) -> None:
    for obj in session.deleted:
        if isinstance(obj, (Ticket, TicketEvent)):
            raise ImmutableRecordError(f"{type(obj).__name__} records are never deleted")
    actor_id = session.info.get("actor_id")
    for obj in list(session.dirty):
        if isinstance(obj, TicketEvent) and session.is_modified(obj):
            raise ImmutableRecordError("ticket events are never altered")
        if isinstance(obj, Ticket):
            session.add_all(list(_change_events(obj, actor_id)))
