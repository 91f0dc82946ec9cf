"""The distributor: which agent's phone rings for which waiting caller (来电排队, 智能转换).

One per ``hotline sip`` process, on a thread of its own, the only part of the call path that
waits on the database. Call threads hand it their callers (``enqueue``) and tell it how each
ring ended (``answered``, ``released``, ``missed``, ``unreachable``, ``finished``); it applies
those to the agents' state machine (``models.agents``) and offers each waiting caller, first
come first served across queues, the longest-idle available agent with the queue's skills. An
offer is a claim in the database (one conditional UPDATE), so two processes never ring one agent.

It wakes on every command, on the bus (an agent made ready in the web desk or the CLI) and
every ``TICK`` seconds; each wake also ends due wrap-ups, and every ``WATCHDOG_SECONDS`` it
repairs agents whose call is over (``models.agents.repair_stuck``). While the database is down
it keeps its commands and retries: callers wait with music, nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config import Settings
from models import agents as agent_rules
from models.agent import Agent, AgentState
from models.db import session_scope
from models.queue import Queue
from models.queues import QueueTimers, all_queues, ensure_default_queue, route, timers
from models.wait import estimate_wait, recent_handle_seconds
from workers import bus

log = logging.getLogger(__name__)

TICK = 0.5
QUEUES_REFRESH_SECONDS = 5.0
WATCHDOG_SECONDS = 10.0
STOP_TIMEOUT = 10.0
CLAIM_TIMEOUT = 5.0
STAFFED = {AgentState.AVAILABLE, AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP}


@dataclass(frozen=True)
class QueueInfo:
    """What a call thread needs of a queue, read from the distributor's cache (never the database)."""

    id: int | None
    name: str
    display_name: str
    menu_key: str | None
    numbers: tuple[str, ...]
    timers: QueueTimers
    overflow_id: int | None = None


@dataclass(frozen=True)
class Offer:
    """An agent claimed for a caller: ring ``extension``; tell the distributor how it ended."""

    agent_id: int
    username: str
    user_id: int
    extension: str
    call_uid: str


@dataclass(eq=False)
class WaitingCall:
    """A caller in a queue. ``since`` orders the callers (first come, first served), ``queued`` times the
    wait in this queue; ``offered`` is set when an agent is claimed for them."""

    uid: str
    caller: str
    queue: QueueInfo
    since: float = field(default_factory=time.monotonic)
    queued: float = field(default_factory=time.monotonic)
    passed_by: set[int] = field(default_factory=set)  # agents (ids) who transferred the caller away
    offer: Offer | None = None
    offered: threading.Event = field(default_factory=threading.Event)

    def take_offer(self) -> Offer | None:
        """The offer, once; the caller is offered nobody else until it is settled."""
        self.offered.clear()
        return self.offer


@dataclass
class QueueFigures:
    staffed: int = 0
    handle_seconds: float = 0.0


Command = Callable[[Session], None]


class Distributor:
    """Offers waiting callers to agents for one ``hotline sip`` process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._waiting: list[WaitingCall] = []
        self._commands: deque[Command] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._queues: list[QueueInfo] = []
        self._figures: dict[int | None, QueueFigures] = {}
        self._bridged: set[str] = set()  # uids of calls with an agent on them (the watchdog's live calls)
        self._queues_read = 0.0
        self._watchdog_run = 0.0
        self._threads: list[threading.Thread] = []
        self.queues_read = threading.Event()  # the queues are known (after the first round)

    # lifecycle

    def start(self) -> None:
        for target, name in ((self._run, "distributor"), (self._listen, "distributor-bus")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Apply what is left (agents back from their calls), then stop."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads[:1]:  # the bus listener is a daemon that ends with its next message
            thread.join(STOP_TIMEOUT)

    # what call threads use (memory only: never waits on the database)

    def queues_for(self, number: str) -> list[QueueInfo]:
        """The queues a hotline number leads to; a number without one goes to the default queue."""
        known = [queue for queue in self._queues if number in queue.numbers]
        if known:
            return known
        default = [queue for queue in self._queues if queue.name == self.settings.queues.default_queue]
        return default or [QueueInfo(None, self.settings.queues.default_queue, self.settings.queues.default_queue,
                                     None, (), timers(Queue(), self.settings))]

    def queue_by_id(self, queue_id: int | None) -> QueueInfo | None:
        return next((queue for queue in self._queues if queue.id == queue_id), None)

    def queue_named_by(self, target: str) -> QueueInfo | None:
        """The queue a transfer target names: one of its numbers (its default queue) or its name."""
        by_number = [queue for queue in self._queues if target in queue.numbers]
        return route(by_number, None) if by_number else next((q for q in self._queues if q.name == target), None)

    def claim(self, extension: str, call_uid: str, timeout: float = CLAIM_TIMEOUT) -> Offer | None:
        """Claim the agent on ``extension`` for a transfer, if available; None if not (or no answer in time)."""
        claimed: list[Offer] = []
        done = threading.Event()

        def claim_agent(session: Session) -> None:
            try:
                agent = agent_rules.agent_on_extension(session, extension)
                if agent is not None and agent_rules.offer(session, agent, call_uid, source="transfer"):
                    claimed.append(self._offer_of(agent, call_uid))
            finally:
                done.set()

        self._command(claim_agent)
        done.wait(timeout)
        return claimed[0] if claimed else None

    def enqueue(self, uid: str, caller: str, queue: QueueInfo, *, at_head: bool = False,
                passed_by: int | None = None, since: float | None = None) -> WaitingCall:
        """Queue a caller, last, first (a transferred caller, served already) or at the place they joined
        at ``since`` (a kept place); never offered to ``passed_by``."""
        waiting = WaitingCall(uid, caller, queue)
        if passed_by is not None:
            waiting.passed_by.add(passed_by)
        with self._lock:
            if since is not None:
                waiting.since = since
            if at_head:
                waiting.since = min((w.since for w in self._waiting), default=waiting.since) - 0.001
            self._waiting.append(waiting)
        self._wake.set()
        return waiting

    def move(self, waiting: WaitingCall, queue: QueueInfo) -> None:
        """Overflow: the caller waits in ``queue`` now, keeping their place among the callers."""
        waiting.queue = queue
        waiting.queued = time.monotonic()
        self._wake.set()

    def leave(self, waiting: WaitingCall) -> None:
        """The caller is no longer waiting (bridged, hung up, or shut down)."""
        with self._lock:
            if waiting in self._waiting:
                self._waiting.remove(waiting)

    def ahead_of(self, waiting: WaitingCall) -> int:
        """Callers of the same queue who came before and are still waiting."""
        with self._lock:
            return sum(1 for other in self._waiting
                       if other.queue.id == waiting.queue.id and other.since < waiting.since)

    def estimated_wait(self, waiting: WaitingCall) -> tuple[int, float]:
        """(callers ahead, estimated seconds) for the announcement."""
        ahead = self.ahead_of(waiting)
        figures = self._figures.get(waiting.queue.id) or QueueFigures(0, self.settings.queues.default_handle_seconds)
        return ahead, estimate_wait(ahead, figures.staffed, figures.handle_seconds)

    def answered(self, offer: Offer) -> None:
        self._bridged.add(offer.call_uid)
        self._command(lambda session: agent_rules.answer(session, self._agent(session, offer), offer.call_uid))

    def released(self, offer: Offer, waiting: WaitingCall | None = None) -> None:
        """The caller went (or was bridged elsewhere) before the agent answered."""
        self._settle(waiting)
        self._command(lambda session: agent_rules.release(session, self._agent(session, offer)))

    def missed(self, offer: Offer, waiting: WaitingCall) -> None:
        """Rang out, declined or busy: the agent is paused (未接) and the caller offered the next agent."""
        log.info("agent %s missed call %s: paused", offer.username, offer.call_uid)
        self._command(lambda session: agent_rules.miss(session, self._agent(session, offer)))
        self._settle(waiting)

    def unreachable(self, offer: Offer, waiting: WaitingCall) -> None:
        """The agent's phone is not registered: logged out, the caller offered the next agent."""
        log.warning("agent %s (extension %s) is not registered: logged out", offer.username, offer.extension)
        self._command(lambda session: agent_rules.log_out(session, self._agent(session, offer), source="distributor",
                                                          reason=agent_rules.UNREGISTERED_REASON))
        self._settle(waiting)

    def log_out_unregistered(self, extensions: set[str]) -> None:
        """Agents whose phones are no longer registered at the PBX are logged out."""

        def log_out(session: Session) -> None:
            for name in agent_rules.log_out_unregistered(session, extensions):
                log.warning("agent %s logged out: their phone is not registered", name)

        self._command(log_out)

    def finished(self, offer: Offer, wrap_up_seconds: float) -> None:
        """The bridged call ended: the agent wraps up (or is available at once)."""

        def finish(session: Session) -> None:
            agent_rules.finish_call(session, self._agent(session, offer), wrap_up_seconds)
            self._bridged.discard(offer.call_uid)

        self._command(finish)

    # the distributor's thread

    def _settle(self, waiting: WaitingCall | None) -> None:
        if waiting is not None:
            waiting.offer = None
            self._wake.set()

    def _command(self, command: Command) -> None:
        with self._lock:
            self._commands.append(command)
        self._wake.set()

    def _agent(self, session: Session, offer: Offer) -> Agent:
        return session.get_one(Agent, offer.agent_id)

    def _run(self) -> None:
        while True:
            self._wake.wait(TICK)
            self._wake.clear()
            stopping = self._stopping.is_set()
            try:
                self._round()
            except SQLAlchemyError as exc:
                log.warning("distributor: database unavailable (%s); retrying", exc.__class__.__name__)
                self._stopping.wait(self.settings.database.retry_seconds)
            except Exception:
                log.exception("distributor round failed")
                self._stopping.wait(self.settings.database.retry_seconds)
            if stopping and not self._commands:
                return

    def _round(self) -> None:
        self._apply_commands()
        now = time.monotonic()
        with session_scope(self.settings) as session:
            if now - self._queues_read > QUEUES_REFRESH_SECONDS:
                self._read_queues(session)
                self._queues_read = now
            agent_rules.end_due_wrap_ups(session)
            if now - self._watchdog_run > WATCHDOG_SECONDS:
                self._watchdog(session)
                self._watchdog_run = now
        if not self._stopping.is_set():
            self._offer_agents()

    def _apply_commands(self) -> None:
        """In order, one transaction each; a failing one stays first in line for the next round."""
        while self._commands:
            command = self._commands[0]
            with session_scope(self.settings) as session:
                command(session)
            with self._lock:
                self._commands.popleft()

    def _read_queues(self, session: Session) -> None:
        # An installation upgraded from before queues existed has none: its callers need one.
        if ensure_default_queue(session, self.settings) is not None:
            log.info("created the default queue %s on %s", self.settings.queues.default_queue,
                     ", ".join(self.settings.sip.hotline_numbers[:1]))
        queues = all_queues(session)
        self._queues = [QueueInfo(q.id, q.name, q.display_name or q.name, q.menu_key, tuple(q.numbers),
                                  timers(q, self.settings), q.overflow_queue_id) for q in queues]
        self.queues_read.set()
        agents = session.scalars(select(Agent).where(Agent.state.in_(STAFFED))).all()
        self._figures = {
            q.id: QueueFigures(staffed=sum(1 for agent in agents if agent_rules.serves(agent, q)),
                               handle_seconds=recent_handle_seconds(session, q.id, self.settings))
            for q in queues}

    def _watchdog(self, session: Session) -> None:
        with self._lock:
            live = set(self._bridged) | {w.uid for w in self._waiting if w.offer is not None}
        for repaired in agent_rules.repair_stuck(session, live):
            log.warning("watchdog repaired %s", repaired)

    def _offer_agents(self) -> None:
        """First come, first served: each caller without an offer gets the longest-idle agent who serves them."""
        with self._lock:
            waiting = sorted((w for w in self._waiting if w.offer is None and w.queue.id is not None),
                             key=lambda w: w.since)
        if not waiting:
            return
        with session_scope(self.settings) as session:
            free = agent_rules.available(session)  # one read a round, however many callers wait
            queues = {queue.id: queue for queue in all_queues(session)}
            for call in waiting:
                queue = queues.get(call.queue.id)
                if queue is None or not free:
                    continue
                for agent in [a for a in free if a.id not in call.passed_by and agent_rules.serves(a, queue)]:
                    free.remove(agent)
                    if agent_rules.offer(session, agent, call.uid):
                        session.commit()
                        self._give(call, agent)
                        break

    def _offer_of(self, agent: Agent, call_uid: str) -> Offer:
        user = agent.user
        assert user.extension is not None  # only agents with an extension are available
        return Offer(agent.id, user.username, user.id, user.extension, call_uid)

    def _give(self, call: WaitingCall, agent: Agent) -> None:
        user = agent.user
        call.offer = self._offer_of(agent, call.uid)
        with self._lock:
            gone = call not in self._waiting
        if gone:  # hung up while we claimed: give the agent back at once
            self.released(call.offer)
            return
        call.offered.set()
        log.info("call %s offered to %s (extension %s)", call.uid, user.username, user.extension)

    def _listen(self) -> None:
        """Wake on every change published by any process (the desk, the CLI, another ``hotline sip``)."""
        for changes in bus.changes(self.settings):
            if self._stopping.is_set():
                return
            if any(change.get("kind") == "agent" for change in changes):
                self._wake.set()

