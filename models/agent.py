"""Agents: a user's place in the call centre — their state, what they are doing, and its history."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, str_enum, utcnow

if TYPE_CHECKING:
    from models.user import User


class AgentState(str, Enum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


class Agent(Base):
    """One user taking calls: their state since when, and the call (``calls.uid``) it concerns.

    ``idle_since`` orders the available agents (the longest idle is offered the next caller);
    ``queues`` names the queues they serve (empty: every queue whose skills they have).
    """

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    state: Mapped[AgentState] = mapped_column(str_enum(AgentState), default=AgentState.LOGGED_OUT)
    reason: Mapped[str] = mapped_column(String(128), default="")
    since: Mapped[datetime] = mapped_column(default=utcnow)
    idle_since: Mapped[datetime] = mapped_column(default=utcnow)
    call_uid: Mapped[str | None] = mapped_column(String(32))
    wrap_up_until: Mapped[datetime | None]
    queues: Mapped[list[Any]] = mapped_column(default=list)

    user: Mapped[User] = relationship(lazy="joined")
    events: Mapped[list[AgentEvent]] = relationship(back_populates="agent", order_by="AgentEvent.id")

    def __repr__(self) -> str:
        return f"<Agent {self.user.username} {self.state.value}>"


class AgentEvent(Base):
    """Every change of an agent's state, with who or what changed it (reports count time in states)."""

    __tablename__ = "agent_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    state: Mapped[AgentState] = mapped_column(str_enum(AgentState))
    previous: Mapped[AgentState] = mapped_column(str_enum(AgentState))
    reason: Mapped[str] = mapped_column(String(128), default="")
    call_uid: Mapped[str | None] = mapped_column(String(32))
    # desk, cli, distributor, watchdog …
    source: Mapped[str] = mapped_column(String(32), default="")
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    agent: Mapped[Agent] = relationship(back_populates="events")
