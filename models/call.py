"""Calls, inbound and outbound, with every timestamp of their life."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, str_enum, utcnow

if TYPE_CHECKING:
    from models.customer import Customer
    from models.queue import Queue
    from models.recording import Recording
    from models.ticket import Ticket
    from models.user import User


def new_call_uid() -> str:
    """The uid a call flow gives its call before any row exists: the key of every event it reports."""
    return uuid.uuid4().hex


class CallDirection(str, Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallState(str, Enum):
    RINGING = "ringing"
    GREETING = "greeting"
    QUEUED = "queued"
    BRIDGED = "bridged"
    ON_HOLD = "on_hold"
    ENDED = "ended"


class CallOutcome(str, Enum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"  # caller gave up before we answered
    ABANDONED = "abandoned"  # caller hung up after the answer, before an agent took it
    NO_AUDIO = "no_audio"
    FAILED = "failed"
    REJECTED = "rejected"  # e.g. no common codec
    NO_ANSWER = "no_answer"
    BUSY = "busy"


class TransferKind(str, Enum):
    OVERFLOW = "overflow"  # waited past the queue's maximum: moved to its overflow queue
    BLIND = "blind"
    ATTENDED = "attended"


class HangupParty(str, Enum):
    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"
    UNKNOWN = "unknown"


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Nullable in the schema only: SQLite adds a NOT NULL column by rebuilding the table, which
    # the foreign keys into calls forbid. Every row has one (this default; 0002 fills old rows).
    uid: Mapped[str] = mapped_column(String(32), nullable=True, unique=True, index=True, default=new_call_uid)
    direction: Mapped[CallDirection] = mapped_column(str_enum(CallDirection))
    state: Mapped[CallState] = mapped_column(str_enum(CallState), default=CallState.RINGING)
    outcome: Mapped[CallOutcome | None] = mapped_column(str_enum(CallOutcome))
    sip_call_id: Mapped[str] = mapped_column(String(255), index=True, default="")
    # The customer's number in E.164 when it parses, else as received (never dropped).
    caller_id: Mapped[str] = mapped_column(String(64), index=True)
    caller_raw: Mapped[str] = mapped_column(String(255), default="")
    callee: Mapped[str] = mapped_column(String(64), default="")
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id"))
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    callback_id: Mapped[int | None] = mapped_column(ForeignKey("callbacks.id"))
    # The customer's previous call: calls from the same number form a chain.
    previous_call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    ring_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    answered_at: Mapped[datetime | None]
    queued_at: Mapped[datetime | None]
    bridged_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    hangup_by: Mapped[HangupParty | None] = mapped_column(str_enum(HangupParty))

    customer: Mapped[Customer | None] = relationship()
    ticket: Mapped[Ticket | None] = relationship(back_populates="calls")
    queue: Mapped[Queue | None] = relationship()
    agent: Mapped[User | None] = relationship()
    previous_call: Mapped[Call | None] = relationship(remote_side=[id])
    recordings: Mapped[list[Recording]] = relationship(back_populates="call", order_by="Recording.id")
    transfers: Mapped[list[CallTransfer]] = relationship(back_populates="call", order_by="CallTransfer.id")

    @property
    def recording(self) -> Recording | None:
        return self.recordings[-1] if self.recordings else None


class CallTransfer(Base):
    """The call passed on: from a queue or agent to another (``from_``/``to`` name them), when and how."""

    __tablename__ = "call_transfers"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    kind: Mapped[TransferKind] = mapped_column(str_enum(TransferKind))
    from_: Mapped[str] = mapped_column("from", String(128))
    to: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    call: Mapped[Call] = relationship(back_populates="transfers")
