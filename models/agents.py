"""The agent state machine: each transition a function, each applied only from the state it expects.

    logged_out ─log_in→ available ─offer→ ringing ─answer→ on_call ─finish_call→ wrap_up ─end_wrap_up→ available
                        available ←release─ ringing ─miss→ paused("未接")
    available/wrap_up/paused ─pause(reason)→ paused ─make_available→ available
    any state but ringing/on_call ─log_out→ logged_out; unregistered phone: log_out from any state

Every transition is one conditional UPDATE (``WHERE state = <expected>``), so two processes —
two ``hotline sip`` behind one dispatcher, or the web desk and the distributor — never both win:
the loser gets ``False`` and the agent as it now is. Each change also writes an ``AgentEvent``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.agent import Agent, AgentEvent, AgentState
from models.base import utcnow
from models.call import Call
from models.queue import Queue
from models.user import User

MISSED_REASON = "未接"
UNREGISTERED_REASON = "phone not registered"

ON_A_CALL = {AgentState.RINGING, AgentState.ON_CALL}
# What a person may choose (desk, CLI): the rest is the distributor's to set.
CHOSEN_STATES = {AgentState.AVAILABLE, AgentState.PAUSED, AgentState.LOGGED_OUT}

ALLOWED: dict[AgentState, set[AgentState]] = {
    AgentState.LOGGED_OUT: {AgentState.AVAILABLE, AgentState.PAUSED},
    AgentState.AVAILABLE: {AgentState.RINGING, AgentState.PAUSED, AgentState.LOGGED_OUT},
    AgentState.RINGING: {AgentState.ON_CALL, AgentState.AVAILABLE, AgentState.PAUSED, AgentState.LOGGED_OUT},
    AgentState.ON_CALL: {AgentState.WRAP_UP, AgentState.AVAILABLE, AgentState.LOGGED_OUT},
    AgentState.WRAP_UP: {AgentState.AVAILABLE, AgentState.PAUSED, AgentState.LOGGED_OUT},
    AgentState.PAUSED: {AgentState.AVAILABLE, AgentState.PAUSED, AgentState.LOGGED_OUT},
}


class AgentStateError(ValueError):
    """A transition the state machine does not allow (e.g. pausing an agent who is on a call)."""


# reading

def agent_of(session: Session, user: User) -> Agent:
    """The user's agent row, created (logged out) on first use."""
    agent = session.scalar(select(Agent).where(Agent.user_id == user.id))
    if agent is None:
        agent = Agent(user=user, state=AgentState.LOGGED_OUT, queues=[])
        session.add(agent)
        session.flush()
    return agent


def agent_named(session: Session, username: str) -> Agent | None:
    user = session.scalar(select(User).where(User.username == username))
    return agent_of(session, user) if user is not None else None


def agent_on_extension(session: Session, extension: str) -> Agent | None:
    user = session.scalar(select(User).where(User.extension == extension))
    return agent_of(session, user) if user is not None else None


def agent_for_call(session: Session, call_uid: str) -> Agent | None:
    return session.scalar(select(Agent).where(Agent.call_uid == call_uid))


def skill_levels(skills: Iterable[object]) -> dict[str, int]:
    """``["粤语:3", "空调"]`` → ``{"粤语": 3, "空调": 1}`` (a skill without a level has level 1)."""
    levels: dict[str, int] = {}
    for skill in skills:
        name, _, level = str(skill).partition(":")
        levels[name.strip()] = int(level) if level.strip().isdigit() else 1
    return levels


def serves(agent: Agent, queue: Queue) -> bool:
    """The agent may take the queue's callers: it is one of their queues and they have its skills."""
    if agent.queues and queue.name not in agent.queues:
        return False
    has = skill_levels(agent.user.skills)
    return all(has.get(name, 0) >= level for name, level in skill_levels(queue.skills).items())


def available(session: Session) -> list[Agent]:
    """Every available agent who can take a call (active, with an extension), the longest idle first."""
    return list(session.scalars(select(Agent).join(Agent.user)
                                .where(Agent.state == AgentState.AVAILABLE, User.active.is_(True),
                                       User.extension.is_not(None))
                                .order_by(Agent.idle_since, Agent.id)))


def available_for(session: Session, queue: Queue) -> list[Agent]:
    """Available agents who serve ``queue``, the longest idle first."""
    return [agent for agent in available(session) if serves(agent, queue)]


# transitions

def log_in(session: Session, agent: Agent, *, source: str) -> bool:
    return _move(session, agent, AgentState.AVAILABLE, source=source, idle=True)


def make_available(session: Session, agent: Agent, *, source: str) -> bool:
    """Ready again (from paused, wrap-up or logged out): they queue up as the newest idle agent."""
    return _move(session, agent, AgentState.AVAILABLE, source=source, idle=True)


def pause(session: Session, agent: Agent, reason: str, *, source: str) -> bool:
    return _move(session, agent, AgentState.PAUSED, source=source, reason=reason)


def log_out(session: Session, agent: Agent, *, source: str, reason: str = "") -> bool:
    return _move(session, agent, AgentState.LOGGED_OUT, source=source, reason=reason)


def choose(session: Session, agent: Agent, state: AgentState, *, reason: str = "", source: str) -> bool:
    """What the desk and ``hotline agent state`` do: available, paused (with a reason) or logged out.

    Choosing the state one is in changes nothing (an available agent keeps their place in line);
    pausing again changes the reason.
    """
    if state not in CHOSEN_STATES:
        raise AgentStateError(f"an agent can choose {', '.join(sorted(s.value for s in CHOSEN_STATES))}, "
                              f"not {state.value}")
    if state is AgentState.AVAILABLE and not agent.user.extension:
        raise AgentStateError(f"{agent.user.username} has no extension to ring: give them one to take calls")
    session.refresh(agent)
    if agent.state in ON_A_CALL and state is not AgentState.LOGGED_OUT:
        raise AgentStateError(f"{agent.user.username} is {agent.state.value}: wait until the call ends")
    if agent.state is state and state is not AgentState.PAUSED:
        return True
    if state is AgentState.PAUSED:
        return pause(session, agent, reason, source=source)
    if state is AgentState.LOGGED_OUT:
        return log_out(session, agent, source=source, reason=reason)
    return make_available(session, agent, source=source)


def offer(session: Session, agent: Agent, call_uid: str, *, source: str = "distributor") -> bool:
    """Claim an available agent for a caller; False when someone else claimed them first."""
    return _move(session, agent, AgentState.RINGING, source=source, call_uid=call_uid, expect=AgentState.AVAILABLE)


def answer(session: Session, agent: Agent, call_uid: str, *, source: str = "distributor") -> bool:
    return _move(session, agent, AgentState.ON_CALL, source=source, call_uid=call_uid, expect=AgentState.RINGING)


def release(session: Session, agent: Agent, *, source: str = "distributor") -> bool:
    """The caller went before the agent answered: available again, keeping their place (idle_since)."""
    return _move(session, agent, AgentState.AVAILABLE, source=source, expect=AgentState.RINGING)


def miss(session: Session, agent: Agent, *, source: str = "distributor") -> bool:
    """The agent's phone rang out or declined: paused ("未接") until they say they are ready."""
    return _move(session, agent, AgentState.PAUSED, source=source, reason=MISSED_REASON, expect=AgentState.RINGING)


def finish_call(session: Session, agent: Agent, wrap_up_seconds: float, *, source: str = "distributor") -> bool:
    """The call ended: wrap-up for ``wrap_up_seconds`` (none: available at once)."""
    if wrap_up_seconds <= 0:
        return _move(session, agent, AgentState.AVAILABLE, source=source, idle=True, expect=AgentState.ON_CALL)
    until = utcnow() + timedelta(seconds=wrap_up_seconds)
    return _move(session, agent, AgentState.WRAP_UP, source=source, wrap_up_until=until, expect=AgentState.ON_CALL)


def end_wrap_up(session: Session, agent: Agent, *, source: str) -> bool:
    return _move(session, agent, AgentState.AVAILABLE, source=source, idle=True, expect=AgentState.WRAP_UP)


def end_due_wrap_ups(session: Session, now: datetime | None = None) -> list[Agent]:
    """Agents whose wrap-up timer ran out, made available."""
    now = now or utcnow()
    due = session.scalars(select(Agent).where(Agent.state == AgentState.WRAP_UP, Agent.wrap_up_until <= now)).all()
    return [agent for agent in due if end_wrap_up(session, agent, source="wrap-up timer")]


def _move(session: Session, agent: Agent, to: AgentState, *, source: str, reason: str = "",
          call_uid: str | None = None, idle: bool = False, wrap_up_until: datetime | None = None,
          expect: AgentState | None = None) -> bool:
    """Apply one transition if the agent is still in the state it was read in (or ``expect``)."""
    session.refresh(agent)
    previous = agent.state
    if expect is not None and previous is not expect:
        return False
    if to not in ALLOWED[previous]:
        raise AgentStateError(f"{agent.user.username}: {previous.value} → {to.value} is not allowed")
    now = utcnow()
    values: dict[str, object] = {"state": to, "reason": reason, "since": now, "call_uid": call_uid,
                                 "wrap_up_until": wrap_up_until}
    if idle:
        values["idle_since"] = now
    moved = session.execute(update(Agent).where(Agent.id == agent.id, Agent.state == previous).values(**values)
                            .execution_options(synchronize_session=False))
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(agent)
        return False
    session.add(AgentEvent(agent_id=agent.id, state=to, previous=previous, reason=reason, call_uid=call_uid,
                           source=source, at=now))
    session.flush()
    session.refresh(agent)
    return True


def repair_stuck(session: Session, live_call_uids: set[str]) -> list[str]:
    """The watchdog: agents ringing or on a call that no live call explains, made available.

    ``live_call_uids`` are the calls this process is running; an agent is stuck when their call is
    none of those and its row has ended (or never was written). Returns what it repaired.
    """
    repaired = []
    for agent in session.scalars(select(Agent).where(Agent.state.in_(ON_A_CALL))).all():
        uid = agent.call_uid
        if uid in live_call_uids:
            continue
        call = session.scalar(select(Call).where(Call.uid == uid)) if uid else None
        if call is not None and call.ended_at is None:
            continue  # another process's call, or one whose end is still in the journal
        previous = agent.state
        if _move(session, agent, AgentState.AVAILABLE, source="watchdog", idle=True, expect=previous):
            repaired.append(f"{agent.user.username}: {previous.value} for call {uid or '-'} that is over → available")
    return repaired


def log_out_unregistered(session: Session, extensions: set[str]) -> list[str]:
    """Log out every agent (not already logged out) whose extension is in ``extensions``: their phone is gone."""
    gone = session.scalars(select(Agent).join(Agent.user).where(Agent.state != AgentState.LOGGED_OUT,
                                                                User.extension.in_(extensions))).all()
    return [agent.user.username for agent in gone
            if log_out(session, agent, source="registrar", reason=UNREGISTERED_REASON)]
