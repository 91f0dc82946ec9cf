"""Callbacks (回访): scheduled outbound calls with their window, attempts and survey answers.

A callback is the promise to call a customer between ``earliest`` and ``latest``; each try is a
``CallbackAttempt``, claimed in the database before anything is dialled (one row per attempt
number, unique), so a job run twice, two schedulers or two SIP processes never dial twice.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, str_enum, utcnow

if TYPE_CHECKING:
    from models.customer import Customer
    from models.ticket import Ticket
    from models.user import User


class CallbackKind(str, Enum):
    SATISFACTION = "satisfaction"  # within 24 h of a delivered result
    COMPLAINT = "complaint"  # within 7 days of a handled complaint
    SUPERVISOR = "supervisor"  # within 2 h of a 不满意 answer
    CUSTOMER_REQUESTED = "customer_requested"  # "leave your number, we call you back"
    VIRTUAL_HOLD = "virtual_hold"  # a queued caller pressed 1 to keep their place


class CallbackState(str, Enum):
    SCHEDULED = "scheduled"  # waiting for its time
    DUE = "due"  # its time has come: the dialler (automatic) or staff (the list) take it
    DIALLING = "dialling"  # an attempt is claimed and the phone rings
    IN_CALL = "in_call"  # answered
    DONE = "done"
    UNREACHABLE = "unreachable"  # attempts used up, or staff gave up
    CANCELLED = "cancelled"
    OVERDUE = "overdue"  # its window has passed and it is not done: still called, and shown first


class CallbackMode(str, Enum):
    AUTO = "auto"  # Hotline's survey by TTS and keys
    STAFF = "staff"  # a person's softphone first, then the customer


class Satisfaction(str, Enum):
    VERY_SATISFIED = "very_satisfied"  # 非常满意 (key 1)
    SATISFIED = "satisfied"  # 满意 (key 2)
    NEUTRAL = "neutral"  # 一般 (key 3)
    DISSATISFIED = "dissatisfied"  # 不满意 (key 4)


class AttemptOutcome(str, Enum):
    COMPLETED = "completed"  # the survey or the conversation took place
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"  # the network or the PBX gave no usable answer
    REJECTED = "rejected"  # declined, or the number does not exist
    INVALID_NUMBER = "invalid_number"
    DO_NOT_CALL = "do_not_call"
    HUNG_UP = "hung_up"  # answered, then gone before the survey was answered
    NO_INPUT = "no_input"  # answered, never pressed a valid key
    ANSWERING_MACHINE = "answering_machine"  # answered, no speech in the first seconds, no key
    STAFF_UNAVAILABLE = "staff_unavailable"  # the staff member's phone did not answer
    ABANDONED = "abandoned"  # the claim's process died before the attempt ended (repaired)


class Callback(Base):
    __tablename__ = "callbacks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[CallbackKind] = mapped_column(str_enum(CallbackKind))
    state: Mapped[CallbackState] = mapped_column(str_enum(CallbackState), default=CallbackState.SCHEDULED, index=True)
    mode: Mapped[CallbackMode] = mapped_column(str_enum(CallbackMode), default=CallbackMode.AUTO)
    # One callback per reason: the unique key is what keeps a customer from being promised twice.
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    phone: Mapped[str] = mapped_column(String(64))
    due_from: Mapped[datetime]  # earliest
    due_by: Mapped[datetime] = mapped_column(index=True)  # latest
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)  # inside calling hours
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    skill: Mapped[str | None] = mapped_column(String(64))  # staff need it (a dialect)
    # Virtual hold: the queue and the moment the caller joined it — their place, kept across restarts.
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id"))
    queued_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_attempt_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(Text)
    flag: Mapped[str | None] = mapped_column(Text)  # why it needs a person's eye (cannot fit calling hours …)
    satisfaction: Mapped[Satisfaction | None] = mapped_column(str_enum(Satisfaction))
    score: Mapped[int | None]
    survey_answers: Mapped[dict[str, Any] | None]
    rq_job_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]

    ticket: Mapped[Ticket | None] = relationship()
    customer: Mapped[Customer | None] = relationship()
    assignee: Mapped[User | None] = relationship()
    attempt_rows: Mapped[list[CallbackAttempt]] = relationship(back_populates="callback",
                                                              order_by="CallbackAttempt.number")


class CallbackAttempt(Base):
    """One try at a callback: claimed (unique per number) before the phone is dialled."""

    __tablename__ = "callback_attempts"
    __table_args__ = (UniqueConstraint("callback_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    callback_id: Mapped[int] = mapped_column(ForeignKey("callbacks.id"), index=True)
    number: Mapped[int]  # 1, 2, 3 …
    claimed_by: Mapped[str] = mapped_column(String(128))  # which process: host:pid
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime | None]  # when it was meant to be dialled (lateness = dialled_at - due_at)
    dialled_at: Mapped[datetime | None]
    call_uid: Mapped[str | None] = mapped_column(String(32))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    ended_at: Mapped[datetime | None]
    outcome: Mapped[AttemptOutcome | None] = mapped_column(str_enum(AttemptOutcome))
    answering_machine: Mapped[bool] = mapped_column(default=False)  # the hint: no speech at first

    callback: Mapped[Callback] = relationship(back_populates="attempt_rows")
