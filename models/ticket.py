"""Tickets (工单), their append-only audit trail, and the daily number sequence."""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Date, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, str_enum, utcnow

if TYPE_CHECKING:
    from models.call import Call
    from models.customer import Customer
    from models.user import User


class TicketType(str, Enum):
    INQUIRY = "inquiry"  # 技术咨询
    REPAIR = "repair"  # 故障维修
    RETURN = "return"  # 退换货申请
    COMPLAINT = "complaint"  # 投诉建议


class Urgency(str, Enum):
    NORMAL = "normal"  # 普通
    URGENT = "urgent"  # 紧急
    CRITICAL = "critical"  # 特急


class Priority(str, Enum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"


class TicketStatus(str, Enum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"  # handler confirmed receipt
    IN_PROGRESS = "in_progress"
    WAITING_CUSTOMER = "waiting_customer"
    RESOLVED = "resolved"  # result delivered: the satisfaction revisit starts
    CLOSED = "closed"


class EventKind(str, Enum):
    CREATED = "created"
    CHANGED = "changed"
    NOTE = "note"
    CALL_LINKED = "call_linked"
    ESCALATED = "escalated"
    TRANSCRIPT = "transcript"
    TRANSFERRED = "transferred"  # the call was passed to another agent or queue (转接)
    CALLBACK = "callback"  # a revisit scheduled, answered or given up (回访)
    IMPROVEMENT = "improvement"  # a low score or 不满意 started the improvement process


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    # prefix + local date + daily sequence: TS20261123001
    number: Mapped[str] = mapped_column(String(32), unique=True)
    type: Mapped[TicketType] = mapped_column(str_enum(TicketType))
    urgency: Mapped[Urgency] = mapped_column(str_enum(Urgency), default=Urgency.NORMAL)
    priority: Mapped[Priority] = mapped_column(str_enum(Priority))
    status: Mapped[TicketStatus] = mapped_column(str_enum(TicketStatus), default=TicketStatus.NEW, index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    # 首问负责制: the first agent who took the contact owns it until it is closed.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    phone: Mapped[str] = mapped_column(String(64), default="")
    customer_name: Mapped[str] = mapped_column(String(128), default="")
    product_model: Mapped[str] = mapped_column(String(64), default="")
    order_number: Mapped[str] = mapped_column(String(64), default="")
    purchase_date: Mapped[date | None] = mapped_column(Date)
    description: Mapped[str] = mapped_column(Text, default="")
    high_frequency: Mapped[bool] = mapped_column(default=False)  # 高频问题
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    receipt_due_at: Mapped[datetime]
    response_due_at: Mapped[datetime]
    resolution_due_at: Mapped[datetime]
    escalation_due_at: Mapped[datetime | None]
    progress_due_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    first_response_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    warned_at: Mapped[datetime | None]  # 预警: flagged overdue
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    # A revisit scored it low or 不满意: the improvement process (改进) is open on it.
    improvement_flagged_at: Mapped[datetime | None]

    customer: Mapped[Customer | None] = relationship()
    owner: Mapped[User | None] = relationship()
    calls: Mapped[list[Call]] = relationship(back_populates="ticket", order_by="Call.ring_at")
    events: Mapped[list[TicketEvent]] = relationship(
        back_populates="ticket", order_by="TicketEvent.id", passive_deletes="all"
    )
    handlers: Mapped[list[TicketHandler]] = relationship(
        back_populates="ticket", order_by="TicketHandler.id", passive_deletes="all"
    )


class TicketEvent(Base):
    """One entry of a ticket's audit trail: who, when, what changed (old → new). Never altered."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: the system
    kind: Mapped[EventKind] = mapped_column(str_enum(EventKind))
    field: Mapped[str | None] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any] | None]

    ticket: Mapped[Ticket] = relationship(back_populates="events")
    actor: Mapped[User | None] = relationship()


class TicketHandler(Base):
    """An agent who served the customer on a call of the ticket (处理人): the owner first, then each
    agent a transfer brought; once per agent, ``since`` their first time."""

    __tablename__ = "ticket_handlers"
    __table_args__ = (UniqueConstraint("ticket_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    since: Mapped[datetime] = mapped_column(default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="handlers")
    user: Mapped[User] = relationship()


class TicketSequence(Base):
    """The last number handed out per prefix and local day; incremented atomically."""

    __tablename__ = "ticket_sequences"

    prefix: Mapped[str] = mapped_column(String(8), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    last: Mapped[int] = mapped_column(default=0)
