"""Queue rules: managing queues, which queue takes a caller, and its timers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import Settings
from models.queue import Queue

MENU_KEYS = "123456789"


class QueueError(ValueError):
    """A queue that cannot be created or changed as asked; the message says why."""


@dataclass(frozen=True)
class QueueTimers:
    ring_timeout: float
    wrap_up: float
    announce: float
    max_wait: float  # 0: no limit


def timers(queue: Queue, settings: Settings) -> QueueTimers:
    """The queue's own timers, or the ``[queues]`` defaults where it has none."""
    defaults = settings.queues

    def own(value: float | None, default: float) -> float:
        return default if value is None else value

    return QueueTimers(ring_timeout=own(queue.ring_timeout_seconds, defaults.ring_timeout),
                       wrap_up=own(queue.wrap_up_seconds, defaults.wrap_up_seconds),
                       announce=own(queue.announce_seconds, defaults.announce_seconds),
                       max_wait=own(queue.max_wait_seconds, defaults.max_wait_seconds))


# managing

def queue_named(session: Session, name: str) -> Queue | None:
    return session.scalar(select(Queue).where(Queue.name == name))


def all_queues(session: Session) -> list[Queue]:
    return list(session.scalars(select(Queue).order_by(Queue.id)))


def add_queue(session: Session, name: str, **fields: object) -> Queue:
    if not name.strip():
        raise QueueError("a queue needs a name")
    if queue_named(session, name) is not None:
        raise QueueError(f"queue {name!r} exists already")
    queue = Queue(name=name, display_name=name, numbers=[], skills=[])
    session.add(queue)
    set_queue(session, queue, **fields)
    return queue


def set_queue(session: Session, queue: Queue, *, overflow: str | None = None, **fields: object) -> Queue:
    """Change the given fields (``numbers``, ``skills``, timers in seconds, ``menu_key``, ``overflow``)."""
    for field, value in fields.items():
        if not hasattr(Queue, field) or field in ("id", "name", "overflow_queue_id"):
            raise QueueError(f"queues have no setting {field!r}")
        if field.endswith("_seconds") and value is not None and float(value) < 0:  # type: ignore[arg-type]
            raise QueueError(f"{field} must not be negative")
        setattr(queue, field, value)
    if queue.menu_key is not None and (len(queue.menu_key) != 1 or queue.menu_key not in MENU_KEYS):
        raise QueueError(f"menu key must be one digit 1-9, not {queue.menu_key!r}")
    if overflow is not None:
        queue.overflow_queue = _overflow_target(session, queue, overflow)
    session.flush()
    _check_menu_keys(session, queue)
    return queue


def _overflow_target(session: Session, queue: Queue, name: str) -> Queue | None:
    if name == "":
        return None
    target = queue_named(session, name)
    if target is None:
        raise QueueError(f"no queue {name!r} to overflow to")
    if target is queue:
        raise QueueError("a queue cannot overflow to itself")
    return target


def _check_menu_keys(session: Session, queue: Queue) -> None:
    """Two queues on one number may not share a menu key (or both be the no-key default)."""
    for other in all_queues(session):
        if other is queue or other.menu_key != queue.menu_key:
            continue
        shared = set(other.numbers) & set(queue.numbers)
        if shared:
            what = f"menu key {queue.menu_key}" if queue.menu_key else "the default (no menu key)"
            raise QueueError(f"queue {other.name!r} already has {what} on {', '.join(sorted(shared))}")


def ensure_default_queue(session: Session, settings: Settings) -> Queue | None:
    """What ``hotline init`` does: one queue on the first hotline number, unless queues exist."""
    if all_queues(session):
        return None
    numbers = settings.sip.hotline_numbers[:1]
    return add_queue(session, settings.queues.default_queue, numbers=numbers)


# routing

def queues_of_number(session: Session, number: str) -> list[Queue]:
    """The queues a hotline number leads to: its menu choices (keyed) and its default (no key)."""
    return [queue for queue in all_queues(session) if number in queue.numbers]


def menu_choices(queues: Iterable[Queue]) -> list[Queue]:
    """The keyed queues of one number, in key order: what its DTMF menu offers."""
    return sorted((q for q in queues if q.menu_key), key=lambda q: q.menu_key or "")


def route(queues: list[Queue], key: str | None) -> Queue | None:
    """The queue for the key pressed (``None``: no key); a number without a default takes its first."""
    for queue in queues:
        if key is not None and queue.menu_key == key:
            return queue
    default = [queue for queue in queues if not queue.menu_key]
    return (default or queues or [None])[0]
