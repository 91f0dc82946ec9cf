"""Queue rules: managing queues, which queue takes a caller, and its timers."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import Settings
from models.agent import Agent
from models.queue import Queue

MENU_KEYS = "123456789"
# A hotline number as callers dial it: digits, an international one with its "+".
NUMBER = re.compile(r"\+?[0-9]{1,32}")
SKILL_LEVEL = re.compile(r"[1-9]")


class QueueError(ValueError):
    """A queue that cannot be created or changed as asked; the message says why.

    ``template`` and ``params`` are the message before formatting, so the web UI can say it in
    its user's language; ``field`` names the setting at fault (None: the queue as a whole).
    """

    def __init__(self, template: str, *, field: str | None = None, **params: object) -> None:
        self.template, self.field, self.params = template, field, {"field": field, **params}
        super().__init__(template % self.params)


@dataclass(frozen=True)
class QueueTimers:
    ring_timeout: float
    wrap_up: float
    announce: float
    max_wait: float  # 0: no limit
    virtual_hold_after: float = 0.0  # 0: never offered


def timers(queue: Queue, settings: Settings) -> QueueTimers:
    """The queue's own timers, or the ``[queues]`` defaults where it has none."""
    defaults = settings.queues

    def own(value: float | None, default: float) -> float:
        return default if value is None else value

    return QueueTimers(ring_timeout=own(queue.ring_timeout_seconds, defaults.ring_timeout),
                       wrap_up=own(queue.wrap_up_seconds, defaults.wrap_up_seconds),
                       announce=own(queue.announce_seconds, defaults.announce_seconds),
                       max_wait=own(queue.max_wait_seconds, defaults.max_wait_seconds),
                       virtual_hold_after=own(queue.virtual_hold_after_seconds, defaults.virtual_hold_after_seconds))


# the settings one by one: what add_queue and set_queue store, and what the CLI and the web UI check as typed

def parse_seconds(text: str | None) -> float | None:
    """A timer as typed: empty is None (the ``[queues]`` default), else a finite number of seconds."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise QueueError("'%(value)s' is not a number of seconds", value=text)
    return value


def check_seconds(field: str, value: float | None) -> float | None:
    if value is not None and float(value) < 0:
        raise QueueError("%(field)s must not be negative", field=field)
    return value


def check_numbers(numbers: Iterable[object]) -> list[str]:
    """Hotline numbers, each once, in the order given."""
    checked: list[str] = []
    for number in numbers:
        text = str(number).strip()
        if not NUMBER.fullmatch(text):
            raise QueueError("'%(number)s' is not a hotline number (digits, e.g. 1000)", field="numbers", number=text)
        if text not in checked:
            checked.append(text)
    return checked


def check_skills(skills: Iterable[object]) -> list[str]:
    """Skills as queues and agents hold them: ``name`` or ``name:level`` (a whole level 1-9), each name once."""
    checked: list[str] = []
    names: set[str] = set()
    for skill in skills:
        # A Chinese keyboard types the full-width colon.
        name, colon, level = str(skill).replace("：", ":").partition(":")
        name, level = name.strip(), level.strip()
        if not name:
            raise QueueError("a skill needs a name, not '%(skill)s'", field="skills", skill=str(skill))
        if colon and not SKILL_LEVEL.fullmatch(level):
            raise QueueError("skill '%(skill)s': the level is a whole number from 1 to 9", field="skills",
                             skill=str(skill))
        if name in names:
            raise QueueError("skill '%(name)s' is given twice", field="skills", name=name)
        names.add(name)
        checked.append(f"{name}:{level}" if colon else name)
    return checked


def check_menu_key(key: str | None) -> str | None:
    if key is not None and (len(key) != 1 or key not in MENU_KEYS):
        raise QueueError("menu key must be one digit 1-9, not '%(key)s'", field="menu_key", key=key)
    return key


def check_text(field: str, text: str | None) -> str | None:
    """A name or language no longer than its column (PostgreSQL would refuse it)."""
    limit = Queue.__table__.c[field].type.length
    if text is not None and len(text) > limit:
        raise QueueError("%(field)s has at most %(max)d characters", field=field, max=limit)
    return text


def check_name(name: str) -> str:
    if not name.strip():
        raise QueueError("a queue needs a name", field="name")
    check_text("name", name)
    return name


def check_setting(field: str, value: Any) -> Any:
    """One setting of ``set_queue`` as it is stored, or QueueError naming the setting."""
    if not hasattr(Queue, field) or field in ("id", "name", "overflow_queue_id"):
        raise QueueError("queues have no setting '%(field)s'", field=field)
    if field.endswith("_seconds"):
        return check_seconds(field, value)
    if field in ("display_name", "language"):
        return check_text(field, value)
    check = {"numbers": check_numbers, "skills": check_skills, "menu_key": check_menu_key}.get(field)
    return check(value) if check else value


# managing

def queue_named(session: Session, name: str) -> Queue | None:
    return session.scalar(select(Queue).where(Queue.name == name))


def all_queues(session: Session) -> list[Queue]:
    return list(session.scalars(select(Queue).order_by(Queue.id)))


def add_queue(session: Session, name: str, **fields: object) -> Queue:
    check_name(name)
    if queue_named(session, name) is not None:
        raise QueueError("queue '%(name)s' exists already", field="name", name=name)
    queue = Queue(name=name, display_name=name, numbers=[], skills=[])
    session.add(queue)
    set_queue(session, queue, **fields)
    return queue


def set_queue(session: Session, queue: Queue, *, overflow: str | None = None, **fields: object) -> Queue:
    """Change the given fields (``numbers``, ``skills``, timers in seconds, ``menu_key``, ``overflow``)."""
    for field, value in fields.items():
        setattr(queue, field, check_setting(field, value))
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
        raise QueueError("no queue '%(name)s' to overflow to", field="overflow", name=name)
    if target is queue:
        raise QueueError("a queue cannot overflow to itself", field="overflow")
    onward, seen = target.overflow_queue, {target.id}
    while onward is not None and onward.id not in seen:  # a caller must not go round for ever
        if onward is queue:
            raise QueueError("'%(name)s' overflows back to this queue", field="overflow", name=name)
        seen.add(onward.id)
        onward = onward.overflow_queue
    return target


def _check_menu_keys(session: Session, queue: Queue) -> None:
    """Two queues on one number may not share a menu key (or both be the no-key default)."""
    for other in all_queues(session):
        if other is queue or other.menu_key != queue.menu_key:
            continue
        shared = ", ".join(sorted(set(other.numbers) & set(queue.numbers)))
        if shared and queue.menu_key:
            raise QueueError("queue '%(other)s' already has menu key %(key)s on %(numbers)s", field="menu_key",
                             other=other.name, key=queue.menu_key, numbers=shared)
        if shared:
            raise QueueError("queue '%(other)s' already has the default (no menu key) on %(numbers)s", field="menu_key",
                             other=other.name, numbers=shared)


def assign_agent(session: Session, agent: Agent, *, skills: Iterable[object], queues: Iterable[str]) -> Agent:
    """What an agent takes: their skills, and the queues they serve (none: every queue whose skills they have)."""
    checked = check_skills(skills)
    names = list(dict.fromkeys(queues))
    known = {queue.name for queue in all_queues(session)}
    for name in names:
        if name not in known:
            raise QueueError("no queue '%(name)s'", field="queues", name=name)
    agent.user.skills = checked
    agent.queues = names  # the agent's row changes, so the bus wakes the distributors to look again
    session.flush()
    return agent


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
