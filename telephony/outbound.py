"""The outbound call flow: dial → ringing → answered → media and recording → hang-up.

What callbacks (回访), virtual-hold returns and agent legs are built on. ``OutboundFlow.dial``
reports the call ringing, opens its media leg, sends the INVITE through the PBX and returns an
``OutboundCall`` at once; a thread of its own follows the call: on the answer it starts the
recording (left the far end, right what Hotline plays or relays), and when either side hangs
up it seals the recording and reports how the call ended. Not answered within
``sip.dial_timeout`` (or the caller's own timeout), it is given up with CANCEL.
"""

from __future__ import annotations

import logging
import threading

from config import Settings
from models.call import CallDirection, CallOutcome, CallState, HangupParty, new_call_uid
from telephony import sip
from telephony.call_events import CallEvents
from telephony.call_media import CallMedia
from telephony.media import MediaEngine, MediaLeg

log = logging.getLogger(__name__)

# How a dialled call that was never answered ended, by the far end's final status.
BUSY_STATUSES = {486, 600}
DECLINED_STATUSES = {603}
UNANSWERED_STATUSES = {408, 480, 487}


class OutboundCall:
    """A call we placed: wait for the answer, play to it, hang it up, wait for its end."""

    def __init__(self, uid: str, dialog: sip.Dialog, call_media: CallMedia) -> None:
        self.uid = uid
        self.dialog = dialog
        self.media = call_media
        self.outcome: CallOutcome | None = None
        self.done = threading.Event()  # ended, and its recording sealed and reported

    @property
    def leg(self) -> MediaLeg:
        return self.media.leg

    def wait_answered(self, timeout: float) -> bool:
        return self.dialog.wait_answered(timeout)

    def hangup(self) -> None:
        """BYE if answered, CANCEL while it rings."""
        self.dialog.hangup()

    def wait_done(self, timeout: float) -> bool:
        return self.done.wait(timeout)


class OutboundFlow:
    """Places calls through the endpoint and follows each to its end."""

    def __init__(self, settings: Settings, endpoint: sip.Endpoint, media: MediaEngine, events: CallEvents) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.media = media
        self.events = events
        self.active: set[OutboundCall] = set()  # placed and not yet done

    def dial(self, number: str, *, caller_id: str | None = None, callback_id: int | None = None,
             timeout: float | None = None, uid: str | None = None) -> OutboundCall:
        """Call ``number`` (an extension or, through the PBX's trunk, a phone number); ``uid``: the call's, if chosen already."""
        uid = uid or new_call_uid()
        call_media = CallMedia(self.settings, self.media, self.events, uid)
        dialog = self.endpoint.dial(dial_string(number, self.settings), call_media.leg.local_port, caller_id=caller_id,
                                    timeout=self.settings.sip.dial_timeout if timeout is None else timeout)
        self.events.ringing(uid, direction=CallDirection.OUTBOUND, caller=number, callee=dialog.caller,
                            sip_call_id=dialog.call_id, callback_id=callback_id)
        call = OutboundCall(uid, dialog, call_media)
        self.active.add(call)
        threading.Thread(target=self._follow, args=(call,), name=f"dial-{uid[:8]}", daemon=True).start()
        return call

    def _follow(self, call: OutboundCall) -> None:
        dialog = call.dialog
        try:
            if dialog.wait_answered(float("inf")):
                self._answered(call)
                dialog.ended.wait()
        except Exception:
            log.exception("outbound call %s failed", call.uid)
            dialog.hangup()
        call.media.finish(reported=dialog.answered.is_set())
        call.outcome, party = outcome_of(dialog)
        self.events.ended(call.uid, outcome=call.outcome, hangup_by=party)
        log.info("outbound call %s to %s ended: %s (status %s)", call.uid, dialog.callee, call.outcome.value,
                 dialog.status)
        call.done.set()
        self.active.discard(call)

    def _answered(self, call: OutboundCall) -> None:
        call.media.connect(call.dialog)
        call.media.record()
        self.events.state(call.uid, CallState.GREETING)
        call.media.report_recording()


def dial_string(number: str, settings: Settings) -> str:
    """An extension of the PBX as it is; any other number behind ``sip.trunk_prefix``, for the PBX's trunk."""
    digits = number.lstrip("+")
    if digits.isdigit() and not number.startswith("+") and len(digits) <= settings.sip.extension_max_digits:
        return number
    return settings.sip.trunk_prefix + number


def outcome_of(dialog: sip.Dialog) -> tuple[CallOutcome, HangupParty]:
    """How a dialled call ended, and who ended it."""
    if dialog.answered.is_set():
        by_them = dialog.end_reason is sip.EndReason.REMOTE_BYE
        return CallOutcome.COMPLETED, HangupParty.CUSTOMER if by_them else HangupParty.SYSTEM
    if dialog.end_reason is sip.EndReason.NO_ANSWER or dialog.status in UNANSWERED_STATUSES:
        return CallOutcome.NO_ANSWER, HangupParty.SYSTEM
    if dialog.status in BUSY_STATUSES:
        return CallOutcome.BUSY, HangupParty.CUSTOMER
    if dialog.status >= 300:  # declined, unknown number, forbidden …
        return CallOutcome.REJECTED, HangupParty.CUSTOMER if dialog.status in DECLINED_STATUSES else HangupParty.SYSTEM
    return CallOutcome.FAILED, HangupParty.SYSTEM  # no answer at all from the PBX
