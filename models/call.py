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
    from models.callback import Callback
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
    KEPT_PLACE = "kept_place"  # the caller chose to be called back and hung up (virtual hold)


class TransferKind(str, Enum):
    OVERFLOW = "overflow"  # waited past the queue's maximum: moved to its overflow queue
    BLIND = "blind"
    ATTENDED = "attended"


class SupervisionMode(str, Enum):
    LISTEN = "listen"  # 监听: the supervisor hears customer and agent, nobody hears them
    WHISPER = "whisper"  # 耳语: the agent hears them too
    BARGE = "barge"  # 强插: everyone hears everyone


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
    callback: Mapped[Callback | None] = relationship()
    queue: Mapped[Queue | None] = relationship()
    agent: Mapped[User | None] = relationship()
    previous_call: Mapped[Call | None] = relationship(remote_side=[id])
    recordings: Mapped[list[Recording]] = relationship(back_populates="call", order_by="Recording.id")
    transfers: Mapped[list[CallTransfer]] = relationship(back_populates="call", order_by="CallTransfer.id")
    segments: Mapped[list[CallSegment]] = relationship(back_populates="call", order_by="CallSegment.id")
    supervisions: Mapped[list[CallSupervision]] = relationship(back_populates="call",
                                                               order_by="CallSupervision.id")

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


class CallSegment(Base):
    """An agent serving the customer (the recording's right channel) from ``started_at`` to ``ended_at``.

    Kept, not derived from the transfers: who takes a caller passed to a queue, and when, is on no
    transfer. ``ended_at`` is None while the agent still has the caller.
    """

    __tablename__ = "call_segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]

    call: Mapped[Call] = relationship(back_populates="segments")
    agent: Mapped[User] = relationship()


class CallSupervision(Base):
    """A supervisor on the call in one mode, from joining (or changing to it) until leaving (or changing)."""

    __tablename__ = "call_supervisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    # The wallboard rings the supervisor's extension; the user is whoever has it (None: nobody now).
    supervisor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    extension: Mapped[str] = mapped_column(String(32))
    mode: Mapped[SupervisionMode] = mapped_column(str_enum(SupervisionMode))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]

    call: Mapped[Call] = relationship(back_populates="supervisions")
    supervisor: Mapped[User | None] = relationship()
