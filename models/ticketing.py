"""The ticket rules of the manuals, in one place: numbers, deadlines, creation, changes, notes.

- Number: prefix + local date + daily sequence (TS20261123001); TS for 技术咨询, SS for the
  three after-sales types (manual 001). The sequence is one atomic upsert, so two processes
  creating tickets at once never get the same number.
- Deadlines: receipt within 1 h, first response by the stricter of the priority clock (P1/P2/P3:
  2/4/8 h) and the type's clock (inquiry 2 h, repair 4 h, return 1 working day, complaint 24 h),
  resolution 24/48/72 h, urgent/critical to the supervisor within 10 min, a progress update
  every 4 h (manuals 000 and 001).
- 高频问题: the same customer with the same problem more than 3 times in 30 days (manual 000).
- Tickets and events are never deleted; every change writes an event (models.audit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config import Settings
from config.defaults import Tickets as TicketRules
from models.audit import acting_as
from models.base import utcnow
from models.customer import Customer
from models.ticket import (
    EventKind, Priority, Ticket, TicketEvent, TicketSequence, TicketStatus, TicketType, Urgency,
)

OPEN_STATUSES = (TicketStatus.NEW, TicketStatus.ACKNOWLEDGED, TicketStatus.IN_PROGRESS, TicketStatus.WAITING_CUSTOMER)
# Set when a ticket reaches the status, so reports and clocks need no event replay.
STATUS_TIMESTAMPS = {
    TicketStatus.ACKNOWLEDGED: "acknowledged_at",
    TicketStatus.RESOLVED: "resolved_at",
    TicketStatus.CLOSED: "closed_at",
}
EDITABLE = {
    "type", "urgency", "priority", "status", "owner_id", "customer_id", "phone", "customer_name",
    "product_model", "order_number", "purchase_date", "description",
}


@dataclass(frozen=True)
class Deadlines:
    receipt: datetime
    response: datetime
    resolution: datetime
    escalation: datetime | None
    progress: datetime


def prefix_for(ticket_type: TicketType, rules: TicketRules) -> str:
    return rules.prefix_inquiry if ticket_type is TicketType.INQUIRY else rules.prefix_service


def default_priority(urgency: Urgency, rules: TicketRules) -> Priority:
    return Priority(getattr(rules, f"default_priority_{urgency.value}"))


def add_working_days(start: datetime, days: int, tz: ZoneInfo) -> datetime:
    """``days`` working days (Monday–Friday, local time) after ``start``, same time of day."""
    local = start.astimezone(tz)
    while days > 0:
        local += timedelta(days=1)
        if local.weekday() < 5:
            days -= 1
    return local


def type_response(ticket_type: TicketType, created: datetime, rules: TicketRules, tz: ZoneInfo) -> datetime:
    if ticket_type is TicketType.RETURN:
        return add_working_days(created, rules.response_working_days_return, tz)
    hours = getattr(rules, f"response_hours_{ticket_type.value}")
    return created + timedelta(hours=hours)


def deadlines(
    ticket_type: TicketType, priority: Priority, urgency: Urgency, created: datetime, rules: TicketRules, tz: ZoneInfo
) -> Deadlines:
    """Every clock a ticket starts with; where two rules set one clock, the stricter wins."""
    level = priority.value.lower()
    by_priority = created + timedelta(hours=getattr(rules, f"response_hours_{level}"))
    escalation = None
    if urgency in (Urgency.URGENT, Urgency.CRITICAL):
        escalation = created + timedelta(minutes=rules.escalation_minutes_urgent)
    return Deadlines(
        receipt=created + timedelta(hours=rules.receipt_hours),
        response=min(by_priority, type_response(ticket_type, created, rules, tz)),
        resolution=created + timedelta(hours=getattr(rules, f"resolution_hours_{level}")),
        escalation=escalation,
        progress=created + timedelta(hours=rules.progress_hours),
    )


def next_number(session: Session, prefix: str, day: date, digits: int) -> str:
    """The next ticket number for the prefix and local day, unique across processes."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(TicketSequence).values(prefix=prefix, day=day, last=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[TicketSequence.prefix, TicketSequence.day],
        set_={"last": TicketSequence.last + 1},
    ).returning(TicketSequence.last)
    sequence = session.execute(stmt).scalar_one()
    # Past 999 a day the number grows a digit rather than failing: no ticket is refused.
    return f"{prefix}{day:%Y%m%d}{sequence:0{digits}d}"


def is_high_frequency(session: Session, customer_id: int | None, ticket_type: TicketType,
                      product_model: str, now: datetime, rules: TicketRules) -> bool:
    """True when this contact makes it more than N of the same problem within the window."""
    if customer_id is None:
        return False
    earlier = session.scalar(
        select(func.count(Ticket.id)).where(
            Ticket.customer_id == customer_id,
            Ticket.type == ticket_type,
            Ticket.product_model == product_model,
            Ticket.created_at >= now - timedelta(days=rules.high_frequency_days),
        )
    )
    return (earlier or 0) + 1 > rules.high_frequency_count


def create_ticket(
    session: Session,
    settings: Settings,
    *,
    ticket_type: TicketType,
    urgency: Urgency = Urgency.NORMAL,
    priority: Priority | None = None,
    description: str = "",
    phone: str = "",
    customer: Customer | None = None,
    owner_id: int | None = None,
    actor_id: int | None = None,
    now: datetime | None = None,
    **fields: Any,
) -> Ticket:
    """A new ticket, numbered, with its clocks started, filled from the customer's record."""
    rules, tz = settings.tickets, ZoneInfo(settings.general.timezone)
    now = now or utcnow()
    priority = priority or default_priority(urgency, rules)
    fields = {**_from_customer(customer), **{k: v for k, v in fields.items() if v not in (None, "")}}
    clocks = deadlines(ticket_type, priority, urgency, now, rules, tz)
    ticket = Ticket(
        number=next_number(session, prefix_for(ticket_type, rules), now.astimezone(tz).date(), rules.sequence_digits),
        type=ticket_type, urgency=urgency, priority=priority, status=TicketStatus.NEW,
        description=description, phone=phone, customer=customer, owner_id=owner_id, created_at=now,
        receipt_due_at=clocks.receipt, response_due_at=clocks.response, resolution_due_at=clocks.resolution,
        escalation_due_at=clocks.escalation, progress_due_at=clocks.progress,
        high_frequency=is_high_frequency(
            session, customer.id if customer else None, ticket_type, fields.get("product_model", ""), now, rules
        ),
        **fields,
    )
    session.add(ticket)
    session.add(TicketEvent(ticket=ticket, at=now, actor_id=actor_id, kind=EventKind.CREATED, text=description))
    session.flush()
    return ticket


def _from_customer(customer: Customer | None) -> dict[str, Any]:
    if customer is None:
        return {}
    latest = max(customer.products, key=lambda p: p.purchase_date or date.min, default=None)
    filled = {"customer_name": customer.name}
    if latest:
        filled |= {"product_model": latest.model, "order_number": latest.order_number,
                   "purchase_date": latest.purchase_date}
    return filled


def change_ticket(session: Session, settings: Settings, ticket: Ticket, actor_id: int | None, **changes: Any) -> Ticket:
    """Change fields of a ticket; each change becomes an audit event attributed to the actor."""
    unknown = set(changes) - EDITABLE
    if unknown:
        raise ValueError(f"ticket fields cannot be changed: {', '.join(sorted(unknown))}")
    now = utcnow()
    with acting_as(session, actor_id):
        for field, value in changes.items():
            setattr(ticket, field, value)
        status = changes.get("status")
        if status in STATUS_TIMESTAMPS and getattr(ticket, STATUS_TIMESTAMPS[status]) is None:
            setattr(ticket, STATUS_TIMESTAMPS[status], now)
        if {"priority", "type", "urgency"} & changes.keys():
            _restart_clocks(ticket, settings)
        session.flush()
    return ticket


def _restart_clocks(ticket: Ticket, settings: Settings) -> None:
    """A new priority, type or urgency re-derives the clocks from the ticket's creation time."""
    clocks = deadlines(ticket.type, ticket.priority, ticket.urgency, ticket.created_at,
                       settings.tickets, ZoneInfo(settings.general.timezone))
    ticket.response_due_at = clocks.response
    ticket.resolution_due_at = clocks.resolution
    ticket.escalation_due_at = clocks.escalation


def add_note(
    session: Session,
    ticket: Ticket,
    text: str,
    *,
    actor_id: int | None = None,
    kind: EventKind = EventKind.NOTE,
    data: dict[str, Any] | None = None,
) -> TicketEvent:
    """Append a note (or a transcript, a call link…) to the ticket's trail; None actor is the system."""
    event = TicketEvent(ticket=ticket, actor_id=actor_id, kind=kind, text=text, data=data)
    session.add(event)
    session.flush()
    return event


def open_ticket_of(session: Session, customer_id: int) -> Ticket | None:
    """The customer's most recent ticket still open, if any."""
    return session.scalar(
        select(Ticket)
        .where(Ticket.customer_id == customer_id, Ticket.status.in_(OPEN_STATUSES))
        .order_by(Ticket.created_at.desc(), Ticket.id.desc())
        .limit(1)
    )


def ticket_as_dict(ticket: Ticket) -> dict[str, Any]:
    """The ticket with its events, linked calls and handlers (处理人), in JSON-ready form (CLI and web UI)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (datetime, date)):
            return value.isoformat()
        return getattr(value, "value", value)

    columns = {c.key: plain(getattr(ticket, c.key)) for c in Ticket.__table__.columns}
    columns["events"] = [
        {c.key: plain(getattr(e, c.key)) for c in TicketEvent.__table__.columns} for e in ticket.events
    ]
    columns["calls"] = [call.id for call in ticket.calls]
    columns["handlers"] = [{"user": handler.user.username, "since": handler.since.isoformat()}
                           for handler in ticket.handlers]
    return columns
