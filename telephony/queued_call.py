"""A caller in a queue: hold music and announcements until an agent answers, then the bridged call.

The caller hears hold music from the moment they are queued — never silence (some phones hang
up after 30 s without RTP) — with their position and estimated wait every announcement period.
When the distributor offers an agent, the agent's phone rings with the caller's number while
the music goes on; an answer bridges the two, a missed ring pauses the agent and the caller waits
for the next, a caller who hangs up cancels the ringing at once. After the bridge, whoever hangs
up first ends the other leg; when the agent does, the caller hears the closing prompt first.
"""

from __future__ import annotations

import logging
import threading
import time

from config import Settings
from models.call import CallOutcome, CallState, HangupParty
from models.wait import spoken_minutes
from telephony import sip
from telephony.agent_call import AgentCall, Ring
from telephony.call_events import CallEvents
from telephony.call_media import WATCH_INTERVAL, CallMedia
from telephony.distributor import Distributor, Offer, QueueInfo, WaitingCall
from telephony.media import MediaEngine
from telephony.prompts import PromptLibrary

log = logging.getLogger(__name__)

Ending = tuple[CallOutcome, HangupParty]


class QueuedCall:
    """One caller from queued to the end of their call with an agent."""

    def __init__(self, settings: Settings, endpoint: sip.Endpoint, engine: MediaEngine, events: CallEvents,
                 distributor: Distributor, prompts: PromptLibrary, uid: str, dialog: sip.Dialog,
                 call_media: CallMedia) -> None:
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

    def request(self, action: str) -> None:
        """A request from the web UI for this call: ``hold`` or ``resume`` (applied by the call's thread)."""
        if action in ("hold", "resume"):
            self.held_from_desk = action == "hold"
        else:
            log.warning("call %s: unknown request %r ignored", self.uid, action)

    def run(self, queue: QueueInfo, stop: threading.Event) -> Ending:
        self.events.state(self.uid, CallState.QUEUED, queue_id=queue.id)
        waiting = self.distributor.enqueue(self.uid, self.dialog.caller, queue)
        try:
            return self._wait(waiting, stop)
        finally:
            self.distributor.leave(waiting)
            self.call_media.leg.stop_loop()

    def _wait(self, waiting: WaitingCall, stop: threading.Event) -> Ending:
        leg, dialog = self.call_media.leg, self.dialog
        leg.loop(self.prompts.hold_music())
        next_announcement = time.monotonic()
        while not dialog.ended.wait(WATCH_INTERVAL):
            if waiting.offered.is_set():
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
        return CallOutcome.ABANDONED, HangupParty.CUSTOMER

    def _announce(self, waiting: WaitingCall) -> None:
        """"您前面还有2位客户，预计等待约3分钟" over the music (not before the greeting has ended)."""
        ahead, seconds = self.distributor.estimated_wait(waiting)
        self.call_media.leg.play(self.prompts.position(ahead, spoken_minutes(seconds)))

    def _overflow(self, waiting: WaitingCall) -> None:
        timers = waiting.queue.timers
        if not timers.max_wait or time.monotonic() - waiting.since < timers.max_wait:
            return
        target = self.distributor.queue_by_id(waiting.queue.overflow_id)
        if target is None:
            return  # no overflow queue: the caller stays (virtual hold comes with the transfers issue)
        log.info("call %s waited %.0f s in %s: overflows to %s", self.uid, time.monotonic() - waiting.since,
                 waiting.queue.name, target.name)
        self.distributor.move(waiting, target)
        self.events.state(self.uid, CallState.QUEUED, queue_id=target.id)

    def _ring(self, offer: Offer, waiting: WaitingCall, stop: threading.Event) -> Ending | None:
        """Ring the offered agent; the call's ending, or None when the caller waits on."""
        agent = AgentCall(self.settings, self.endpoint, self.engine, offer)
        ring = agent.ring(self.dialog.caller, self.dialog, waiting.queue.timers.ring_timeout)
        log.info("call %s: agent %s %s after %.1f s", self.uid, offer.username, ring.value,
                 time.monotonic() - agent.rang_at)
        if ring is Ring.ANSWERED:
            self.distributor.leave(waiting)
            self.distributor.answered(offer)
            try:
                return self._talk(agent, stop)
            finally:
                agent.close(self.call_media.leg)
                self.distributor.finished(offer, waiting.queue.timers.wrap_up)
        agent.close()
        if ring is Ring.CALLER_GONE:
            self.distributor.released(offer)
            return CallOutcome.ABANDONED, HangupParty.CUSTOMER
        if ring is Ring.UNREACHABLE:
            self.distributor.unreachable(offer, waiting)
        else:
            self.distributor.missed(offer, waiting)
        return None

    def _talk(self, agent: AgentCall, stop: threading.Event) -> Ending:
        """Bridged until one side hangs up (or we shut down); on hold while the phone or the desk says so."""
        leg, dialog = self.call_media.leg, self.dialog
        agent_dialog = agent.dialog
        assert agent_dialog is not None
        leg.stop_playback()
        agent.bridge(leg)
        self.events.state(self.uid, CallState.BRIDGED, agent_id=agent.offer.user_id)
        held = False
        while not dialog.ended.wait(WATCH_INTERVAL):
            if agent_dialog.ended.is_set():
                self.engine.unbridge(leg)
                return self._close(CallOutcome.COMPLETED, HangupParty.AGENT)
            if stop.is_set():
                agent.hangup()
                return self._close(CallOutcome.COMPLETED)
            if held != (agent.held_by_phone or self.held_from_desk):
                held = not held
                log.info("call %s %s by agent %s", self.uid, "held" if held else "resumed", agent.offer.username)
                agent.hold(leg, held, self.prompts.hold_music())
                self.events.state(self.uid, CallState.ON_HOLD if held else CallState.BRIDGED)
        agent.hangup()
        return CallOutcome.COMPLETED, HangupParty.CUSTOMER

    def _close(self, outcome: CallOutcome, party: HangupParty = HangupParty.SYSTEM) -> Ending:
        """The closing prompt (谢谢您的来电), then BYE."""
        self.call_media.leg.stop_loop()
        self.call_media.close_with(self.prompts.closing(), self.dialog)
        return outcome, party

