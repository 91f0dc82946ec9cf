"""The inbound call flow: ring → answer → greet → record → queue → hang-up → ticket.

An inbound call is reported ringing, answered after ``sip.answer_delay`` (within the rings the
phone manual allows), greeted with the greeting and the recording notice, and recorded from the
answer to the hang-up as a stereo WAV (left the customer, right what Hotline or an agent says).
A number with several queues then offers its DTMF menu ("技术咨询请按1，售后服务请按2"; RFC 2833
or SIP INFO; no key → the number's default queue), and the caller waits in the queue for an
agent (``telephony/queued_call.py``). At the end the recording is sealed and the call linked to
a ticket.

Nothing here waits on the database: every row is an event for ``CallEvents``, which journals it
and writes it when the database answers. A call is answered even while the database is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from config import Settings
from models.queues import route
from models.call import CallDirection, CallOutcome, CallState, HangupParty, new_call_uid
from telephony import sip
from telephony.call_events import CallEvents
from telephony.call_media import WATCH_INTERVAL, CallMedia, wall_clock
from telephony.distributor import Distributor, QueueInfo
from telephony.media import MediaEngine
from telephony.prompts import PromptLibrary
from telephony.queued_call import QueuedCall
from telephony.virtual_hold import VirtualHold

log = logging.getLogger(__name__)


class InboundFlow:
    """Runs one inbound call from its INVITE to its end, on a thread of its own."""

    def __init__(self, settings: Settings, endpoint: sip.Endpoint, media: MediaEngine, events: CallEvents,
                 distributor: Distributor, prompts: Callable[[], PromptLibrary],
                 virtual_hold: VirtualHold | None = None) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.media = media
        self.events = events
        self.distributor = distributor
        self.prompts = prompts
        self.virtual_hold = virtual_hold
        self.queued: dict[str, QueuedCall] = {}  # by calls.uid: the calls a desk may ask to hold

    def run(self, dialog: sip.Dialog, stop: threading.Event) -> None:
        """The whole call; ``stop`` is set when the service shuts down (we close the call ourselves)."""
        uid = new_call_uid()
        self.events.ringing(uid, direction=CallDirection.INBOUND, caller=dialog.caller, callee=dialog.callee,
                            sip_call_id=dialog.call_id, at=wall_clock(dialog.created))
        call_media: CallMedia | None = None
        try:
            outcome, party, call_media = self._run(uid, dialog, stop)
        except Exception:
            log.exception("call %s failed", dialog.call_id)
            dialog.hangup()
            outcome, party = CallOutcome.FAILED, HangupParty.SYSTEM
        if call_media is not None:
            call_media.finish(reported=dialog.answered.is_set())
        self.events.ended(uid, outcome=outcome, hangup_by=party)
        log.info("call %s from %s ended: %s (hung up by %s)", uid, dialog.caller, outcome.value, party.value)

    def _run(self, uid: str, dialog: sip.Dialog,
             stop: threading.Event) -> tuple[CallOutcome, HangupParty, CallMedia | None]:
        if dialog.end_reason is sip.EndReason.REJECTED:  # no common codec: the endpoint sent 488
            return CallOutcome.REJECTED, HangupParty.SYSTEM, None
        delay = self.settings.sip.answer_delay - (time.monotonic() - dialog.created)
        if dialog.ended.wait(max(0.0, delay)):
            return CallOutcome.CANCELLED, HangupParty.CUSTOMER, None
        call_media = self._answer(uid, dialog)
        if dialog.state is not sip.DialogState.ANSWERED:
            return CallOutcome.CANCELLED, HangupParty.CUSTOMER, call_media  # CANCEL crossed our 200 OK
        prompts = self.prompts()
        call_media.leg.play(prompts.greeting() + prompts.recording_notice())
        outcome, party = self._wait_end(uid, dialog, call_media, stop)
        return outcome, party, call_media

    def _answer(self, uid: str, dialog: sip.Dialog) -> CallMedia:
        """Media and the WAV first, then the 200 OK; the rows follow the answer."""
        call_media = CallMedia(self.settings, self.media, self.events, uid)
        call_media.connect(dialog)
        call_media.record()
        dialog.answer(call_media.leg.local_port)
        if dialog.answered.is_set():
            self.events.state(uid, CallState.GREETING)
            call_media.report_recording()
        return call_media

    def _wait_end(self, uid: str, dialog: sip.Dialog, call_media: CallMedia,
                  stop: threading.Event) -> tuple[CallOutcome, HangupParty]:
        """The greeting to its end, the menu if the number has one, then the queue."""
        if not self._played_out(dialog, call_media, stop):
            return self._ended_early(dialog, call_media)
        queues = self.distributor.queues_for(dialog.callee)
        queue = route(queues, None)
        choices = [q for q in queues if q.menu_key]
        if choices:
            key = self._menu(dialog, call_media, choices, stop)
            if dialog.ended.is_set() or stop.is_set():
                return self._ended_early(dialog, call_media)
            queue = route(queues, key)
        queued = QueuedCall(self.settings, self.endpoint, self.media, self.events, self.distributor, self.prompts(),
                            uid, dialog, call_media, self.virtual_hold)
        self.queued[uid] = queued
        try:
            return queued.run(queue, stop)
        finally:
            del self.queued[uid]

    def _played_out(self, dialog: sip.Dialog, call_media: CallMedia, stop: threading.Event) -> bool:
        """Wait until the greeting has ended; False if the call ended (or went silent) meanwhile."""
        leg = call_media.leg
        while leg.playing:
            if dialog.ended.wait(WATCH_INTERVAL) or stop.is_set():
                return False
            if time.monotonic() - leg.last_rx > self.settings.sip.no_audio_timeout:
                return False
        return True

    def _menu(self, dialog: sip.Dialog, call_media: CallMedia, choices: list[QueueInfo],
              stop: threading.Event) -> str | None:
        """Play the menu and take the first key (RFC 2833 or SIP INFO) within ``queues.menu_timeout``."""
        keys: list[str] = []
        call_media.leg.on_dtmf = dialog.on_dtmf = keys.append
        try:
            pcm = self.prompts().menu([(q.display_name, q.menu_key or "") for q in choices])
            call_media.leg.play(pcm)
            deadline = None
            while not keys and not dialog.ended.is_set() and not stop.is_set():
                if deadline is None and not call_media.leg.playing:
                    deadline = time.monotonic() + self.settings.queues.menu_timeout
                if deadline is not None and time.monotonic() > deadline:
                    break
                dialog.ended.wait(WATCH_INTERVAL / 2)
        finally:
            call_media.leg.on_dtmf = dialog.on_dtmf = None
        call_media.leg.stop_playback()
        log.info("call %s: menu key %s", dialog.call_id, keys[0] if keys else "none")
        return keys[0] if keys else None

    def _ended_early(self, dialog: sip.Dialog, call_media: CallMedia) -> tuple[CallOutcome, HangupParty]:
        """Hung up (or silent, or shut down) before reaching a queue."""
        if dialog.ended.is_set():
            return CallOutcome.ABANDONED, HangupParty.CUSTOMER
        silent = time.monotonic() - call_media.leg.last_rx > self.settings.sip.no_audio_timeout
        call_media.close_with(self.prompts().closing(), dialog)
        return CallOutcome.NO_AUDIO if silent else CallOutcome.FAILED, HangupParty.SYSTEM
