"""The inbound call flow: ring → answer → greet → record → queue → hang-up → ticket.

An inbound call is reported ringing, answered after ``sip.answer_delay`` (within the rings the
phone manual allows), greeted with the greeting and the recording notice, and recorded from the
answer to the hang-up as a stereo WAV (left the customer, right what Hotline or an agent says).
Until queues and agents exist the caller then waits, queued, until they hang up. At the end the
recording is sealed and the call linked to a ticket.

Nothing here waits on the database: every row is an event for ``CallEvents``, which journals it
and writes it when the database answers. A call is answered even while the database is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from config import Settings
from models.call import CallDirection, CallOutcome, CallState, HangupParty, new_call_uid
from telephony import sip
from telephony.call_events import CallEvents
from telephony.call_media import WATCH_INTERVAL, CallMedia
from telephony.media import MediaEngine
from telephony.prompts import PromptLibrary

log = logging.getLogger(__name__)


class InboundFlow:
    """Runs one inbound call from its INVITE to its end, on a thread of its own."""

    def __init__(self, settings: Settings, media: MediaEngine, events: CallEvents,
                 prompts: Callable[[], PromptLibrary]) -> None:
        self.settings = settings
        self.media = media
        self.events = events
        self.prompts = prompts

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
        """Greeting, then queued, until the caller hangs up, the audio stops or we shut down."""
        leg = call_media.leg
        queued = False
        timeout = self.settings.sip.no_audio_timeout
        while not dialog.ended.wait(WATCH_INTERVAL):
            if not queued and not leg.playing:
                queued = True
                self.events.state(uid, CallState.QUEUED)
            if time.monotonic() - leg.last_rx > timeout:
                call_media.close_with(self.prompts().closing(), dialog)
                return CallOutcome.NO_AUDIO, HangupParty.SYSTEM
            if stop.is_set():
                call_media.close_with(self.prompts().closing(), dialog)
                return CallOutcome.FAILED, HangupParty.SYSTEM
        return CallOutcome.ABANDONED, HangupParty.CUSTOMER


def wall_clock(monotonic: float) -> datetime:
    """The UTC time of a ``time.monotonic()`` reading (when the INVITE arrived)."""
    return datetime.now(timezone.utc) - timedelta(seconds=time.monotonic() - monotonic)
