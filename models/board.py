"""What ``hotline queue status``, the agent desk and the wallboard show: callers waiting, agents, today's figures.

Everything is read from the database, so any process (``hotline sip``, ``hotline web``) shows the
same board again right after a restart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from config import Settings
from models.agent import Agent, AgentState
from models.agents import serves
from models.base import utcnow
from models.call import Call, CallDirection, CallOutcome, CallState
from models.queues import all_queues
from models.user import User

IN_PROGRESS = (CallState.BRIDGED, CallState.ON_HOLD)
# The caller went before an agent took them: before our answer (cancelled) or after it (abandoned).
GAVE_UP = (CallOutcome.ABANDONED, CallOutcome.CANCELLED)


def queue_status(session: Session, settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """``hotline queue status --json``: each queue's waiting callers (next first) and every agent, by name."""
    now = now or utcnow()
    waiting = _waiting(session, now)
    return {
        "queues": [{"name": queue.name, "numbers": list(queue.numbers), "waiting": waiting.get(queue.id, [])}
                   for queue in all_queues(session)],
        "agents": [agent_row(agent) for agent in agents_by_name(session)],
    }


def wallboard(session: Session, settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """The supervisor's wallboard: per queue and in total, who waits, who works, and today's figures.

    ``{"at", "target_s", "queues": [{"name", "display_name", "waiting": [as in queue_status],
    "longest_wait_s", "agents": {state: count}, "in_progress": [{"call_id", "caller_id", "state",
    "agent", "talk_s"}], "today": {…}}], "totals": {"waiting", "longest_wait_s", "agents",
    "in_progress" (a count), "today"}}``. ``agents`` counts agents by state (every state present,
    zeros included): per queue those who serve it, in total each agent once. ``today`` counts the
    inbound calls queued since midnight in ``general.timezone``: ``offered``, ``answered``,
    ``answered_in_target`` (an agent within ``target_s`` of the first ring), ``abandoned``,
    ``service_level``, ``abandonment_rate``, ``average_speed_of_answer_s``, ``average_handle_s``.
    """
    now = now or utcnow()
    target = settings.sip.max_rings * settings.sip.ring_seconds
    waiting = _waiting(session, now)
    agents = agents_by_name(session)
    talking = _in_progress(session, now)
    today = _offered_today(session, settings, now)
    queues = []
    for queue in all_queues(session):
        queued = waiting.get(queue.id, [])
        queues.append({
            "name": queue.name,
            "display_name": queue.display_name,
            "waiting": queued,
            "longest_wait_s": _longest(queued),
            "agents": _by_state(agent for agent in agents if serves(agent, queue)),
            "in_progress": talking.get(queue.id, []),
            "today": _figures([row for row in today if row.queue_id == queue.id], target),
        })
    every_caller = [caller for queued in waiting.values() for caller in queued]
    return {
        "at": _iso(now),
        "target_s": target,
        "queues": queues,
        "totals": {
            "waiting": len(every_caller),
            "longest_wait_s": _longest(every_caller),
            "agents": _by_state(agents),
            "in_progress": sum(len(calls) for calls in talking.values()),
            "today": _figures(today, target),
        },
    }


def _waiting(session: Session, now: datetime) -> dict[int, list[dict[str, Any]]]:
    """Queued callers by queue id, in the order they are served (position 1 is next)."""
    rows = session.execute(select(Call.queue_id, Call.uid, Call.caller_id, Call.queued_at)
                           .where(Call.state == CallState.QUEUED, Call.ended_at.is_(None), Call.queue_id.is_not(None))
                           .order_by(Call.queued_at, Call.id))
    waiting: dict[int, list[dict[str, Any]]] = {}
    for queue_id, uid, caller_id, queued_at in rows:
        queued = waiting.setdefault(queue_id, [])
        queued.append({"call_id": uid, "caller_id": caller_id, "position": len(queued) + 1,
                       "waited_s": _seconds(queued_at, now)})
    return waiting


def agents_by_name(session: Session) -> list[Agent]:
    """Every agent row (a user becomes an agent the first time their state is set), by user name."""
    return list(session.scalars(select(Agent).join(Agent.user).order_by(User.username)))


def agent_row(agent: Agent) -> dict[str, Any]:
    """An agent as ``queue status`` shows them; ``since`` in ISO-8601 UTC, ``call_id`` the call's uid."""
    return {"name": agent.user.username, "extension": agent.user.extension, "state": agent.state.value,
            "since": _iso(agent.since), "call_id": agent.call_uid}


def _by_state(agents: Iterable[Agent]) -> dict[str, int]:
    counts = Counter(agent.state for agent in agents)
    return {state.value: counts[state] for state in AgentState}


def _in_progress(session: Session, now: datetime) -> dict[int, list[dict[str, Any]]]:
    """Calls an agent is on (talking or holding), by queue id, the longest first."""
    rows = session.execute(select(Call.queue_id, Call.uid, Call.caller_id, Call.state, Call.bridged_at, User.username)
                           .outerjoin(User, User.id == Call.agent_id)
                           .where(Call.state.in_(IN_PROGRESS), Call.ended_at.is_(None), Call.queue_id.is_not(None))
                           .order_by(Call.bridged_at, Call.id))
    talking: dict[int, list[dict[str, Any]]] = {}
    for queue_id, uid, caller_id, state, bridged_at, agent in rows:
        talking.setdefault(queue_id, []).append({"call_id": uid, "caller_id": caller_id, "state": state.value,
                                                 "agent": agent, "talk_s": _seconds(bridged_at, now)})
    return talking


def _offered_today(session: Session, settings: Settings, now: datetime) -> Sequence[Row[Any]]:
    """Inbound calls queued since local midnight: what the day's figures count."""
    zone = ZoneInfo(settings.general.timezone)
    midnight = datetime.combine(now.astimezone(zone).date(), time(), tzinfo=zone)
    return session.execute(select(Call.queue_id, Call.ring_at, Call.queued_at, Call.bridged_at, Call.ended_at,
                                  Call.outcome)
                           .where(Call.direction == CallDirection.INBOUND, Call.queue_id.is_not(None),
                                  Call.queued_at >= midnight, Call.queued_at < midnight + timedelta(days=1))).all()


def _figures(calls: Sequence[Row[Any]], target: float) -> dict[str, Any]:
    """Offered, answered (and within ``target`` seconds of the first ring), given up; rates and means.

    Rates and means are ``None`` while there is nothing to divide by.
    """
    answered = [call for call in calls if call.bridged_at is not None]
    in_target = [call for call in answered if (call.bridged_at - call.ring_at).total_seconds() <= target]
    gave_up = [call for call in calls if call.outcome in GAVE_UP]
    handled = [call for call in answered if call.ended_at is not None]
    return {
        "offered": len(calls),
        "answered": len(answered),
        "answered_in_target": len(in_target),
        "abandoned": len(gave_up),
        "service_level": _ratio(len(in_target), len(calls)),
        "abandonment_rate": _ratio(len(gave_up), len(calls)),
        "average_speed_of_answer_s": _mean(call.bridged_at - call.queued_at for call in answered),
        "average_handle_s": _mean(call.ended_at - call.bridged_at for call in handled),
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def _mean(durations: Iterable[timedelta]) -> float | None:
    seconds = [duration.total_seconds() for duration in durations]
    return round(sum(seconds) / len(seconds), 1) if seconds else None


def _longest(waiting: list[dict[str, Any]]) -> float:
    return max((caller["waited_s"] for caller in waiting), default=0.0)


def _seconds(since: datetime | None, now: datetime) -> float:
    return round(max(0.0, (now - since).total_seconds()), 1) if since else 0.0


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")
