"""The agent's leg of a queued call: ring the agent, bridge them to the caller, follow hold and hang-up.

Hotline stays in the media path: the agent's phone is dialled at ``sip:EXT@PBX`` with the
caller's number as caller ID (来电号码显示) and, once it answers, each leg hears the other through
the media engine (both jitter-buffered). The caller's recording then has the caller on the left
and the agent on the right, because the caller's leg sends what the agent says. When the agent
holds — from their phone (re-INVITE sendonly/inactive) or from the desk — the caller hears hold
music instead of silence.
"""

from __future__ import annotations

import logging
import threading
import time
from enum import Enum

from config import Settings
from telephony import sip
from telephony.call_media import WATCH_INTERVAL
from telephony.distributor import Offer
from telephony.media import MediaEngine, MediaLeg

log = logging.getLogger(__name__)

# The agent's phone said it is not there (not registered, unknown): log them out.
UNREACHABLE_STATUSES = {404, 410, 480, 484}


class Ring(str, Enum):
    """How ringing an agent ended."""

    ANSWERED = "answered"
    CALLER_GONE = "caller_gone"  # the caller hung up: the agent's ringing was CANCELled
    MISSED = "missed"  # rang out, declined, busy
    UNREACHABLE = "unreachable"


class AgentCall:
    """One agent leg, from its INVITE to its BYE."""

    def __init__(self, settings: Settings, endpoint: sip.Endpoint, engine: MediaEngine, offer: Offer) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.engine = engine
        self.offer = offer
        self.leg: MediaLeg = engine.open_leg()
        self.dialog: sip.Dialog | None = None
        self.rang_at = 0.0

    def ring(self, caller_id: str, customer_gone: threading.Event, timeout: float) -> Ring:
        """Ring the agent for up to ``timeout`` s; CANCEL at once if the customer hangs up (``customer_gone``) meanwhile."""
        self.rang_at = time.monotonic()
        self.dialog = dialog = self.endpoint.dial(self.offer.extension, self.leg.local_port, caller_id=caller_id,
                                                  timeout=timeout)
        while not dialog.ended.is_set():
            if dialog.answered.wait(WATCH_INTERVAL / 2):
                return Ring.ANSWERED
            if customer_gone.is_set():
                dialog.hangup()  # CANCEL: never ring an agent for a caller who has gone
                return Ring.CALLER_GONE
        if dialog.answered.is_set():
            return Ring.ANSWERED
        if customer_gone.is_set():
            return Ring.CALLER_GONE
        return Ring.UNREACHABLE if dialog.status in UNREACHABLE_STATUSES else Ring.MISSED

    def bridge(self, customer: MediaLeg) -> None:
        """Each side hears the other."""
        self.connect()
        customer.stop_loop()
        self.engine.bridge(customer, self.leg)

    def connect(self) -> None:
        """Send to the agent's phone, and follow it when a re-INVITE moves its media."""
        dialog = self.dialog
        assert dialog is not None and dialog.remote_media is not None and dialog.codec is not None
        codec = dialog.codec
        self.leg.connect((dialog.remote_media.address, dialog.remote_media.port), codec.payload_type,
                         codec.dtmf_payload_type)

        def follow(moved: sip.Dialog) -> None:
            if moved.remote_media is not None and not moved.on_hold:
                self.leg.connect((moved.remote_media.address, moved.remote_media.port), codec.payload_type,
                                 codec.dtmf_payload_type)

        dialog.on_media = follow

    def hold(self, customer: MediaLeg, held: bool, hold_music: bytes) -> None:
        """On hold the caller hears music and the two hear each other no more; off hold, each other again."""
        if held:
            self.engine.unbridge(customer)
            customer.loop(hold_music)
        else:
            customer.stop_loop()
            self.engine.bridge(customer, self.leg)

    @property
    def held_by_phone(self) -> bool:
        """The agent's phone holds the call (its re-INVITE was sendonly or inactive)."""
        return self.dialog is not None and self.dialog.on_hold

    def hangup(self) -> None:
        if self.dialog is not None:
            self.dialog.hangup()

    def close(self, customer: MediaLeg | None = None) -> None:
        """Hang up if still up, take the leg off the engine (and the caller off it)."""
        self.hangup()
        if customer is not None:
            self.engine.unbridge(customer)
        self.leg.close()
