"""SIP dialogs: one per call leg, its state machine, and the requests sent inside it.

A ``Dialog`` is what the call flows hold: ``answer``/``reject`` an inbound INVITE, ``hangup``
either way, and hooks the endpoint calls on the SIP threads (they must return quickly):
``on_end`` once when it ends, ``on_media`` when a re-INVITE moved or held the far end's media,
``on_dtmf`` for a SIP INFO key press, ``on_refer`` for a REFER (a blind transfer asked by the
far end). It is not the ``calls`` row of the data model: one call may hold several dialogs
(the customer's, an agent's …).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

from telephony.sip.message import Message, new_branch, param, user_of
from telephony.sip.sdp import Codec, MediaOffer
from telephony.sip.timers import Timer

if TYPE_CHECKING:
    from telephony.sip.endpoint import Endpoint

USER_AGENT = "Hotline"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, REFER, NOTIFY"


class DialogState(str, Enum):
    RINGING = "ringing"  # inbound offered / outbound dialling
    ANSWERED = "answered"
    ENDED = "ended"


class EndReason(str, Enum):
    CANCELLED = "cancelled"  # the caller gave up before the answer
    REMOTE_BYE = "remote_bye"
    LOCAL_BYE = "local_bye"
    REJECTED = "rejected"  # we refused it (or the far end refused our INVITE: see ``status``)
    NO_ANSWER = "no_answer"  # we gave up dialling out and sent CANCEL
    TIMEOUT = "timeout"  # no ACK to our 200 OK, or no response at all to our INVITE
    FAILED = "failed"


class Dialog:
    """One dialog. Inbound: ``answer(rtp_port)`` or ``reject(status)``; either side: ``hangup()``.

    An inbound INVITE without G.711 is refused with 488 before ``on_invite`` sees it (ended,
    ``end_reason`` REJECTED), so the call can still be logged.
    """

    def __init__(self, endpoint: Endpoint, *, inbound: bool, call_id: str, local_tag: str,
                 local_uri: str, remote_uri: str, invite: Message | None = None) -> None:
        self.endpoint = endpoint
        self.inbound = inbound
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = ""
        self.local_uri = local_uri  # name-addr values of our From/To
        self.remote_uri = remote_uri
        self.remote_target = ""  # the far end's Contact URI
        self.route_set: list[str] = []
        self.local_cseq = 0
        self.remote_cseq = 0
        self.invite = invite  # inbound: the initial INVITE; outbound: the INVITE we sent
        self.state = DialogState.RINGING
        self.end_reason: EndReason | None = None
        self.status = 0  # outbound: final status of our INVITE
        self.bye_status = 0  # final status of the BYE we sent (408: no answer)
        self.remote_media: MediaOffer | None = None
        self.codec: Codec | None = None
        self.local_sdp = b""
        self.session_id = int(time.time() * 1000) % 10**10
        self.created = time.monotonic()  # when the INVITE arrived (inbound) or was sent
        self.answered = threading.Event()
        self.ended = threading.Event()
        self.confirmed = threading.Event()  # inbound: ACK to our 200 OK arrived
        self.on_end: Callable[[Dialog], None] | None = None
        self.on_media: Callable[[Dialog], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.on_refer: Callable[[Dialog, str], bool] | None = None
        self.ok: Message | None = None  # inbound: our 200 OK, retransmitted until ACK
        self.ack: Message | None = None  # outbound: our ACK, resent on 200 OK retransmissions
        self.retransmit: Timer | None = None  # resends our 200 OK (inbound) or gives up dialling (outbound)

    @property
    def caller(self) -> str:
        """The calling party's user part (the customer's number, inbound)."""
        return user_of(self.remote_uri if self.inbound else self.local_uri)

    @property
    def callee(self) -> str:
        return user_of(self.local_uri if self.inbound else self.remote_uri)

    @property
    def on_hold(self) -> bool:
        """The far end holds us (its last offer was sendonly, inactive or port 0)."""
        return self.remote_media is not None and self.remote_media.on_hold

    def answer(self, rtp_port: int) -> None:
        """Answer with our SDP: the chosen codec at ``rtp_port`` of ``endpoint.media_ip``."""
        self.endpoint.answer(self, rtp_port)

    def reject(self, status: int = 486) -> None:
        self.endpoint.reject(self, status)

    def hangup(self) -> None:
        """BYE when answered; CANCEL while dialling out; 480 to an inbound call still ringing."""
        self.endpoint.hangup(self)

    def notify_refer(self, status: int) -> None:
        """Tell the far end how the transfer it asked for goes (RFC 3515 NOTIFY, message/sipfrag)."""
        self.endpoint.notify_refer(self, status)

    def wait_answered(self, timeout: float) -> bool:
        """Outbound: True once the far end answered (ACK sent); False on failure or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.ended.is_set():
            if self.answered.wait(0.05):
                return True
        return self.answered.is_set()

    def request(self, method: str, via: str, cseq: int | None = None) -> Message:
        """A request inside the dialog: R-URI = the far end's Contact, Route = the route set.

        ``via`` is our sent-by (``host:port``); ``cseq`` given only for an ACK (the INVITE's number).
        """
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        msg = Message(f"{method} {self.remote_target} SIP/2.0")
        msg.headers.append(("Via", f"SIP/2.0/UDP {via};branch={new_branch()};rport"))
        local = self.local_uri if param(self.local_uri, "tag") else f"{self.local_uri};tag={self.local_tag}"
        remote = self.remote_uri if param(self.remote_uri, "tag") else (
            f"{self.remote_uri};tag={self.remote_tag}" if self.remote_tag else self.remote_uri)
        msg.headers += [("Max-Forwards", "70"), ("From", local), ("To", remote), ("Call-ID", self.call_id),
                        ("CSeq", f"{cseq} {method}")]
        msg.headers += [("Route", r) for r in self.route_set]
        msg.headers.append(("User-Agent", USER_AGENT))
        return msg

    def __repr__(self) -> str:
        return f"<Dialog {self.call_id} {self.caller}→{self.callee} {self.state.value}>"
