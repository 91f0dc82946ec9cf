"""Callbacks (回访): scheduled outbound calls with their due window, attempts and survey answers."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, str_enum, utcnow

if TYPE_CHECKING:
    from models.ticket import Ticket
    from models.user import User


class CallbackKind(str, Enum):
    SATISFACTION = "satisfaction"  # within 24 h of a delivered result
    COMPLAINT = "complaint"  # within 7 days of a handled complaint
    SUPERVISOR = "supervisor"  # within 2 h of a 不满意 answer
    CUSTOMER_REQUESTED = "customer_requested"  # "leave your number, we call you back"


class CallbackState(str, Enum):
    PENDING = "pending"
    SCHEDULED = "scheduled"  # an RQ job is queued for it
    DIALLING = "dialling"
    DONE = "done"
    UNREACHABLE = "unreachable"
    CANCELLED = "cancelled"


class Satisfaction(str, Enum):
    VERY_SATISFIED = "very_satisfied"  # 非常满意
    SATISFIED = "satisfied"  # 满意
    NEUTRAL = "neutral"  # 一般
    DISSATISFIED = "dissatisfied"  # 不满意


class Callback(Base):
    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[CallbackKind] = mapped_column(str_enum(CallbackKind))
    state: Mapped[CallbackState] = mapped_column(str_enum(CallbackState), default=CallbackState.PENDING, index=True)
    # One callback per reason: the unique key is what keeps a customer from being dialled twice.
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    phone: Mapped[str] = mapped_column(String(64))
    due_from: Mapped[datetime]
    due_by: Mapped[datetime] = mapped_column(index=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    attempts: Mapped[int] = mapped_column(default=0)
    last_attempt_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(Text)
    satisfaction: Mapped[Satisfaction | None] = mapped_column(str_enum(Satisfaction))
    score: Mapped[int | None]
    survey_answers: Mapped[dict[str, Any] | None]
    rq_job_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]

    ticket: Mapped[Ticket | None] = relationship()
    assignee: Mapped[User | None] = relationship()
