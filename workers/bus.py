"""The bus: every committed change of an agent or a call, published on Redis for whoever listens.

The database holds the truth; the bus only says "look again". One listener on the ORM session
collects the agents and calls a transaction changed, and publishes them once it commits on the
``hotline:changes`` channel — so the distributor of every ``hotline sip``, the agent desks and
the wallboards wake within milliseconds of any change, whichever process made it. When Redis is
down nothing is lost: listeners also look again every ``POLL_SECONDS``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import event
from sqlalchemy.orm import Session

from config import Settings
from models.agent import Agent, AgentEvent
from models.call import Call
from workers.connection import redis_connection

log = logging.getLogger(__name__)

CHANNEL = "hotline:changes"
# Requests for a live call from the web UI (hold, resume) to the ``hotline sip`` running it.
CALL_REQUESTS = "hotline:call-requests"
POLL_SECONDS = 1.0
_PENDING = "bus_changes"
_installed: dict[str, Settings] = {}


def install(settings: Settings) -> None:
    """Publish every committed agent and call change of this process (idempotent; the newest settings win)."""
    first = not _installed
    _installed["settings"] = settings
    if not first:
        return
    event.listen(Session, "after_flush", _collect)
    event.listen(Session, "after_commit", _publish_pending)
    event.listen(Session, "after_rollback", lambda session: session.info.pop(_PENDING, None))


def _collect(session: Session, _context: object) -> None:
    pending: list[dict[str, Any]] = session.info.setdefault(_PENDING, [])
    for obj in (*session.new, *session.dirty):
        if isinstance(obj, Agent):
            pending.append({"kind": "agent", "id": obj.id})
        elif isinstance(obj, AgentEvent):  # transitions are conditional UPDATEs: their event is what the session holds
            pending.append({"kind": "agent", "id": obj.agent_id})
        elif isinstance(obj, Call):
            pending.append({"kind": "call", "uid": obj.uid})


def _publish_pending(session: Session) -> None:
    changes = session.info.pop(_PENDING, None)
    if changes:
        publish(_installed["settings"], changes)


def publish(settings: Settings, changes: list[dict[str, Any]]) -> None:
    """Say what changed; a Redis outage is logged, never raised (listeners poll as well)."""
    try:
        redis_connection(settings).publish(CHANNEL, json.dumps(changes))
    except (RedisError, OSError) as exc:
        log.warning("cannot publish %d changes on the bus (%s); listeners will poll", len(changes), exc)


def request_call(settings: Settings, call_uid: str, action: str, target: str = "") -> bool:
    """Ask the ``hotline sip`` running call ``call_uid`` to ``action`` it (hold, resume, transfer to ``target``).

    False if no process heard it.
    """
    request = {"uid": call_uid, "action": action, "target": target}
    try:
        heard = redis_connection(settings).publish(CALL_REQUESTS, json.dumps(request))
    except (RedisError, OSError) as exc:
        log.warning("cannot ask for %s of call %s (%s)", action, call_uid, exc)
        return False
    return bool(heard)


def changes(settings: Settings, timeout: float = POLL_SECONDS) -> Iterator[list[dict[str, Any]]]:
    """Lists of changes as they are published; an empty list after ``timeout`` s of quiet (look again anyway).

    Reconnects after a Redis outage, yielding empty lists meanwhile.
    """
    for message in _messages(settings, CHANNEL, timeout):
        yield message or []


def call_requests(settings: Settings, timeout: float = POLL_SECONDS) -> Iterator[dict[str, Any] | None]:
    """Requests for live calls (``{"uid", "action", "target"}``) as they come; None after ``timeout`` s of quiet."""
    yield from _messages(settings, CALL_REQUESTS, timeout)


def _messages(settings: Settings, channel: str, timeout: float) -> Iterator[Any]:
    outage = False
    while True:
        try:
            pubsub = redis_connection(settings).pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(channel)
                if outage:
                    log.info("bus reachable again")
                    outage = False
                while True:
                    message = pubsub.get_message(timeout=timeout)
                    yield json.loads(message["data"]) if message else None
            finally:  # a closed page unsubscribes at once, not when collected
                pubsub.close()
        except (RedisError, OSError) as exc:
            if not outage:  # once per outage: the listener retries every ``timeout`` seconds
                log.warning("bus unreachable (%s); polling", exc)
                outage = True
            time.sleep(timeout)
            yield None
