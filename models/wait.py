"""The wait a queued caller is told (预计等待).

The estimate uses what Asterisk's leaves out — the caller's position — and the agents staffed
now: a caller with ``ahead`` callers before them waits for ``ahead + 1`` calls to end across the
``staffed`` agents, each call lasting the queue's recent mean handle time. An agent already on a
call is, on average, half-way through it.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import Settings
from models.base import utcnow
from models.call import Call


def estimate_wait(ahead: int, staffed: int, handle_seconds: float) -> float:
    """Seconds a caller with ``ahead`` callers before them will wait, ``staffed`` agents serving them.

    With nobody staffed the estimate is as if one agent were (someone will log in; the caller
    must still hear a number): an honest upper bound beats silence.
    """
    servers = max(1, staffed)
    rounds = (ahead + 1) / servers
    # Every agent is busy (or the caller would not wait): the first round ends after half a call.
    return max(0.0, (rounds - 0.5) * handle_seconds)


def spoken_minutes(seconds: float) -> int:
    """What the announcement says: whole minutes, at least one."""
    return max(1, math.ceil(seconds / 60))


def recent_handle_seconds(session: Session, queue_id: int | None, settings: Settings,
                          now: datetime | None = None) -> float:
    """Mean handle time (bridged → ended) of the queue's last ``queues.recent_calls`` calls of the past day."""
    since = (now or utcnow()) - timedelta(days=1)
    rows = session.execute(select(Call.bridged_at, Call.ended_at)
                           .where(Call.queue_id == queue_id, Call.bridged_at.is_not(None),
                                  Call.ended_at.is_not(None), Call.ended_at >= since)
                           .order_by(Call.ended_at.desc()).limit(settings.queues.recent_calls)).all()
    durations = [(ended - bridged).total_seconds() for bridged, ended in rows]
    return sum(durations) / len(durations) if durations else settings.queues.default_handle_seconds
