"""A caller in a queue: hold music and announcements until an agent answers, then the bridged call.

The caller hears hold music from the moment they are queued — never silence (some phones hang
up after 30 s without RTP) — with their position and estimated wait every announcement period.
When the distributor offers an agent, the agent's phone rings with the caller's number while
the music goes on; an answer bridges the two, a missed ring pauses the agent and the caller waits
for the next, a caller who hangs up cancels the ringing at once. After the bridge, whoever hangs
up first ends the other leg; when the agent does, the caller hears the closing prompt first.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from config import Settings
from models.call import CallOutcome, CallState, HangupParty, TransferKind
from models.wait import spoken_minutes
from telephony import sip
from telephony.sip.message import user_of
from telephony.agent_call import AgentCall, Ring
from telephony.call_events import CallEvents
from telephony.call_media import WATCH_INTERVAL, CallMedia
from telephony.distributor import Distributor, Offer, QueueInfo, WaitingCall
from telephony.media import MediaEngine, MediaLeg
from telephony.prompts import PromptLibrary
from telephony.supervision import Mode, Supervision
from telephony.virtual_hold import KeepPlace, VirtualHold

log = logging.getLogger(__name__)

Ending = tuple[CallOutcome, HangupParty]
THREE_WAY_SECONDS = 1.0  # completing an attended transfer: all three hear each other this long


class QueuedCall:
    """One caller from queued to the end of their call with an agent."""

    def __init__(self, settings: Settings, endpoint: sip.Endpoint, engine: MediaEngine, events: CallEvents,
                 distributor: Distributor, prompts: PromptLibrary, uid: str, dialog: sip.Dialog,
                 call_media: CallMedia, virtual_hold: VirtualHold | None = None) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.engine = engine
        self.events = events
        self.distributor = distributor
        self.prompts = prompts
        self.uid = uid
        self.dialog = dialog
        self.call_media = call_media
        self.held_from_desk = False  # set by a hold request from the agent desk (``request``)
        self.transfer_to: str | None = None  # an extension, a queue's number or name: set by REFER or the desk
        self.referred = False  # the transfer was asked by REFER: the agent's phone is told how it goes
        self.waiting: WaitingCall | None = None
        self.supervise: tuple[Mode, str] | None = None  # asked from the wallboard: (mode, supervisor's extension)
        self.consult_with: str | None = None  # attended transfer: the extension the agent consults (desk)
        self.consult_end: str | None = None  # "complete" or "cancel" the consultation (desk)
        self.keep_place = KeepPlace(settings, prompts, virtual_hold, dialog, call_media) if virtual_hold else None

    def request(self, action: str, target: str = "") -> None:
        """A request from the web UI: ``hold``, ``resume`` or ``transfer`` to ``target`` (the call's thread acts)."""
        if action in ("hold", "resume"):
            self.held_from_desk = action == "hold"
        elif action == "transfer" and target:
            self.transfer_to = target
        elif action == "consult" and target:
            self.consult_with = target
        elif action in ("complete", "cancel"):
            self.consult_end = action
        elif action in {mode.value for mode in Mode} and target:
            self.supervise = (Mode(action), target)
        else:
            log.warning("call %s: unknown request %r ignored", self.uid, action)

    def run(self, queue: QueueInfo, stop: threading.Event) -> Ending:
        self._queue(queue)
        try:
            return self._wait(stop)
        finally:
            if self.waiting is not None:
                self.distributor.leave(self.waiting)
            self.call_media.leg.stop_loop()

    def _queue(self, queue: QueueInfo, *, passed_by: Offer | None = None) -> None:
        """Wait in ``queue``; a caller an agent passed on (a transfer) is served next, by someone else."""
        self.events.state(self.uid, CallState.QUEUED, queue_id=queue.id)
        self.waiting = self.distributor.enqueue(self.uid, self.dialog.caller, queue, at_head=passed_by is not None,
                                                passed_by=passed_by.agent_id if passed_by else None)

    def _wait(self, stop: threading.Event) -> Ending:
        leg, dialog = self.call_media.leg, self.dialog
        leg.loop(self.prompts.hold_music())
        next_announcement = time.monotonic()
        while not dialog.ended.is_set():
            waiting = self.waiting
            assert waiting is not None
            if waiting.offered.wait(WATCH_INTERVAL):  # an offer is taken at once, not at the next look
                offer = waiting.take_offer()
                ending = self._ring(offer, waiting, stop) if offer is not None else None
                if ending is not None:
                    return ending
                continue
            if time.monotonic() - leg.last_rx > self.settings.sip.no_audio_timeout:
                return self._close(CallOutcome.NO_AUDIO)
            if stop.is_set():
                return self._close(CallOutcome.FAILED)
            if time.monotonic() >= next_announcement and not leg.playing:
                self._announce(waiting)
                next_announcement = time.monotonic() + waiting.queue.timers.announce
            self._overflow(waiting)
            if self.keep_place is not None and self.keep_place.kept(waiting):
                return CallOutcome.KEPT_PLACE, HangupParty.SYSTEM
        return CallOutcome.ABANDONED, HangupParty.CUSTOMER

    def _announce(self, waiting: WaitingCall) -> None:
        """"您前面还有2位客户，预计等待约3分钟" over the music (not before the greeting has ended)."""
        ahead, seconds = self.distributor.estimated_wait(waiting)
        self.call_media.leg.play(self.prompts.position(ahead, spoken_minutes(seconds)))

    def _overflow(self, waiting: WaitingCall) -> None:
        timers = waiting.queue.timers
        if not timers.max_wait or time.monotonic() - waiting.queued < timers.max_wait:
            return
        target = self.distributor.queue_by_id(waiting.queue.overflow_id)
        if target is None:
            return  # no overflow queue: the caller stays
        log.info("call %s waited %.0f s in %s: overflows to %s", self.uid, time.monotonic() - waiting.queued,
                 waiting.queue.name, target.name)
        self.events.transferred(self.uid, TransferKind.OVERFLOW, waiting.queue.name, target.name)
        self.distributor.move(waiting, target)
        self.events.state(self.uid, CallState.QUEUED, queue_id=target.id)

    def _ring(self, offer: Offer, waiting: WaitingCall, stop: threading.Event) -> Ending | None:
        """Ring the offered agent; the call's ending, or None when the caller waits on."""
        agent = AgentCall(self.settings, self.endpoint, self.engine, offer)
        ring = agent.ring(self.dialog.caller, self.dialog.ended, waiting.queue.timers.ring_timeout)
        log.info("call %s: agent %s %s after %.1f s", self.uid, offer.username, ring.value,
                 time.monotonic() - agent.rang_at)
        if ring is Ring.ANSWERED:
            self.distributor.leave(waiting)
            self.waiting = None
            self.distributor.answered(offer)
            return self._serve(agent, waiting, stop)
        agent.close()
        self._unanswered(ring, offer, waiting)
        return (CallOutcome.ABANDONED, HangupParty.CUSTOMER) if ring is Ring.CALLER_GONE else None

    def _unanswered(self, ring: Ring, offer: Offer, waiting: WaitingCall | None) -> None:
        """The agent's ring ended without an answer: the agent freed, paused or logged out."""
        if ring is Ring.CALLER_GONE:
            self.distributor.released(offer)
        elif ring is Ring.UNREACHABLE:
            self.distributor.unreachable(offer, waiting)
        else:
            self.distributor.missed(offer, waiting)

    def _serve(self, agent: AgentCall, waiting: WaitingCall, stop: threading.Event) -> Ending | None:
        """The caller with ``agent``, then with whoever they are transferred to; None: queued again."""
        while True:
            try:
                ending = self._talk(agent, waiting, stop)
            except BaseException:
                self._let_go(agent, waiting)
                raise
            if ending is not None:
                self._let_go(agent, waiting)
                return ending
            if self.consult_with is not None:
                served = self._consult(agent, waiting)
                if not isinstance(served, AgentCall):
                    return served
                agent = served
                continue
            next_agent = self._transfer(agent, waiting)
            if next_agent is None:
                return None  # queued again, at the head
            agent = next_agent

    def _let_go(self, agent: AgentCall, waiting: WaitingCall) -> None:
        """The agent is free (or wraps up): once per agent leg."""
        if agent.leg.closed:
            return
        agent.close(self.call_media.leg)
        self.distributor.finished(agent.offer, waiting.queue.timers.wrap_up)

    def _talk(self, agent: AgentCall, waiting: WaitingCall, stop: threading.Event) -> Ending | None:
        """Bridged until one side hangs up (or we shut down), or a transfer is asked (None).

        On hold while the agent's phone or the desk says so; a supervisor joins when the wallboard asks.
        """
        leg, dialog = self.call_media.leg, self.dialog
        agent_dialog = agent.dialog
        assert agent_dialog is not None
        leg.stop_playback()
        agent.bridge(leg)
        agent_dialog.on_refer = self._referred
        self.events.state(self.uid, CallState.BRIDGED, agent_id=agent.offer.user_id)
        held = False
        supervisor: Supervision | None = None
        try:
            while not dialog.ended.wait(WATCH_INTERVAL):
                if self.transfer_to is not None or self.consult_with is not None:
                    return None
                if agent_dialog.ended.is_set():
                    self._let_go(agent, waiting)  # free for the next caller now, not after this one's closing prompt
                    return self._close(CallOutcome.COMPLETED, HangupParty.AGENT)
                if stop.is_set():
                    agent.hangup()
                    return self._close(CallOutcome.COMPLETED)
                if held != (agent.held_by_phone or self.held_from_desk):
                    held = not held
                    log.info("call %s %s by agent %s", self.uid, "held" if held else "resumed", agent.offer.username)
                    agent.hold(leg, held, self.prompts.hold_music())
                    self.events.state(self.uid, CallState.ON_HOLD if held else CallState.BRIDGED)
                supervisor = self._supervised(supervisor, agent)
        finally:
            if supervisor is not None:
                supervisor.leave(leg, agent.leg)
        agent.hangup()
        return CallOutcome.COMPLETED, HangupParty.CUSTOMER

    def _supervised(self, supervisor: Supervision | None, agent: AgentCall) -> Supervision | None:
        """Start, change or end a supervisor's part in the call, as the wallboard asked."""
        leg = self.call_media.leg
        asked, self.supervise = self.supervise, None
        if asked is not None:
            mode, extension = asked
            log.info("call %s: supervisor %s asks to %s", self.uid, extension, mode.value)
            if supervisor is not None and supervisor.extension == extension and not supervisor.ended:
                supervisor.change(mode, leg, agent.leg)  # listen → whisper → barge on the same leg
            else:
                if supervisor is not None:
                    supervisor.leave(leg, agent.leg)
                supervisor = Supervision(self.endpoint, self.engine, extension, mode,
                                         functools.partial(self.events.supervised, self.uid))
                supervisor.ring(self.dialog.caller, self.settings.queues.ring_timeout)
        if supervisor is None:
            return None
        if supervisor.ended:
            supervisor.leave(leg, agent.leg)
            return None
        supervisor.join_once_answered(leg, agent.leg)
        return supervisor

    def _consult(self, agent: AgentCall, waiting: WaitingCall) -> AgentCall | Ending:
        """Attended transfer: the caller hears music while the agent talks with a colleague (the caller
        hears neither); ``complete`` joins all three for a moment, then the first agent drops; ``cancel``
        (or the colleague hanging up, or not answering) brings the first agent back to the caller.
        """
        target, self.consult_with, self.consult_end = self.consult_with or "", None, None
        leg = self.call_media.leg
        agent.hold(leg, True, self.prompts.hold_music())
        self.events.state(self.uid, CallState.ON_HOLD)
        offer = self.distributor.claim(target, self.uid)
        if offer is None:
            log.info("call %s: %s cannot consult %s: not available", self.uid, agent.offer.username, target)
            return agent
        colleague = AgentCall(self.settings, self.endpoint, self.engine, offer)
        ring = colleague.ring(self.dialog.caller, self.dialog.ended, waiting.queue.timers.ring_timeout)
        if ring is not Ring.ANSWERED:
            colleague.close()
            self._unanswered(ring, offer, None)
            return agent
        self.distributor.answered(offer)
        colleague.connect()
        self.engine.bridge(agent.leg, colleague.leg)
        log.info("call %s: %s consults %s", self.uid, agent.offer.username, offer.username)
        while not self.dialog.ended.wait(WATCH_INTERVAL):
            assert agent.dialog is not None and colleague.dialog is not None
            if colleague.dialog.ended.is_set() or self.consult_end == "cancel":
                break
            if self.consult_end == "complete" or agent.dialog.ended.is_set():
                self._join_all(leg, agent, colleague)
                self._let_go(agent, waiting)
                self.events.transferred(self.uid, TransferKind.ATTENDED, agent.offer.username, offer.username,
                                        agent_id=offer.user_id)
                return colleague
        self.engine.unbridge(colleague.leg)
        colleague.close()
        self.distributor.finished(offer, 0)
        if self.dialog.ended.is_set():
            self._let_go(agent, waiting)
            return CallOutcome.COMPLETED, HangupParty.CUSTOMER
        return agent  # back to the caller (``_talk`` bridges them again)

    def _join_all(self, customer: MediaLeg, agent: AgentCall, colleague: AgentCall) -> None:
        """Completing an attended transfer: three-way for a moment, so the colleague is introduced."""
        customer.stop_loop()
        engine = self.engine
        engine.set_hears(customer, [agent.leg, colleague.leg])
        engine.set_hears(agent.leg, [customer, colleague.leg])
        engine.set_hears(colleague.leg, [customer, agent.leg])
        if agent.dialog is not None and not agent.dialog.ended.is_set():
            time.sleep(THREE_WAY_SECONDS)

    def _referred(self, _dialog: sip.Dialog, target: str) -> bool:
        """The agent's phone asks for a blind transfer (REFER): taken by the call's thread."""
        self.transfer_to = user_of(target) or target
        self.referred = True
        return True

    def _transfer(self, agent: AgentCall, waiting: WaitingCall) -> AgentCall | None:
        """Blind transfer (转接): the caller hears music while the target rings.

        To a queue (its number or name): queued again at the head, the first agent let go. To an
        agent's extension: they ring; on their answer the first agent is let go; a failed transfer
        comes back to the first agent, or (if they have hung up) to the queue at the head.
        """
        target, self.transfer_to = self.transfer_to or "", None
        referred, self.referred = self.referred, False

        def notify(status: int) -> None:
            if referred and agent.dialog is not None:
                agent.dialog.notify_refer(status)

        leg = self.call_media.leg
        agent.hold(leg, True, self.prompts.hold_music())
        self.events.state(self.uid, CallState.ON_HOLD)
        log.info("call %s: %s transfers to %s", self.uid, agent.offer.username, target)
        queue = self.distributor.queue_named_by(target)
        if queue is not None:
            notify(200)
            self._let_go(agent, waiting)
            self.events.transferred(self.uid, TransferKind.BLIND, agent.offer.username, queue.name)
            self._queue(queue, passed_by=agent.offer)
            return None
        offer = self.distributor.claim(target, self.uid)
        ring = Ring.MISSED
        if offer is not None:
            next_agent = AgentCall(self.settings, self.endpoint, self.engine, offer)
            ring = next_agent.ring(self.dialog.caller, self.dialog.ended, waiting.queue.timers.ring_timeout)
            if ring is Ring.ANSWERED:
                notify(200)
                self._let_go(agent, waiting)
                self.distributor.answered(offer)
                self.events.transferred(self.uid, TransferKind.BLIND, agent.offer.username, offer.username,
                                        agent_id=offer.user_id)
                return next_agent
            next_agent.close()
            self._unanswered(ring, offer, None)
        log.info("call %s: transfer to %s failed (%s)", self.uid, target, ring.value if offer else "not available")
        notify(480 if offer is None else 486)
        if agent.dialog is not None and not agent.dialog.ended.is_set():
            agent.hold(leg, False, b"")
            return agent
        self._let_go(agent, waiting)
        self._queue(waiting.queue, passed_by=agent.offer)
        return None

    def _close(self, outcome: CallOutcome, party: HangupParty = HangupParty.SYSTEM) -> Ending:
        """The closing prompt (谢谢您的来电), then BYE."""
        self.call_media.leg.stop_loop()
        self.call_media.close_with(self.prompts.closing(), self.dialog)
        return outcome, party

