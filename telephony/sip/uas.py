"""The answering side: INVITEs offered to us and the requests inside an answered dialog.

An INVITE is checked before anyone sees it: a Contact we could not send a BYE to gets 400, an
SDP we cannot use 488 with the reason, one without G.711 488 (``on_invite`` still hears of
that one, so the call is logged). Our 200 OK is resent until its ACK; without one in 32 s the
call is over. A re-INVITE (hold, a moved stream) and UPDATE are answered with our same stream,
its direction mirrored (held → we answer ``recvonly``/``inactive``), so media never restarts.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from telephony.sip.dialog import Dialog, DialogState, EndReason
from telephony.sip.message import (
    Message, SipParseError, host_port, new_tag, param, reason, response_address, uri_of, user_of,
)
from telephony.sip.sdp import Direction, SdpError, build_sdp, choose_codec, parse_sdp
from telephony.sip.transaction import T1, T2, TIMEOUT

if TYPE_CHECKING:
    from telephony.sip.endpoint import Endpoint

# What we answer to each direction the far end offers (RFC 3264 §6.1).
ANSWER_DIRECTION = {Direction.SENDRECV: Direction.SENDRECV, Direction.SENDONLY: Direction.RECVONLY,
                    Direction.RECVONLY: Direction.SENDONLY, Direction.INACTIVE: Direction.INACTIVE}
DTMF_RELAY = re.compile(r"Signal\s*=\s*([0-9A-D*#])", re.IGNORECASE)


class Answering:
    """The user-agent-server half of an endpoint; every method runs under ``endpoint.lock``."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    # a new call

    def on_invite(self, msg: Message) -> None:
        endpoint = self.endpoint
        try:
            target = uri_of(msg.get("Contact") or "")
            host_port(target)
        except SipParseError as exc:
            endpoint.respond(msg, 400, extra=[("Warning", f'399 hotline "Contact: {exc}"')])
            return
        try:
            offer = parse_sdp(msg.body)
        except SdpError as exc:
            endpoint.respond(msg, 488, extra=[("Warning", f'305 hotline "{exc}"')])
            return
        endpoint.respond(msg, 100)
        dialog = Dialog(endpoint, inbound=True, call_id=msg.call_id, local_tag=new_tag(),
                        local_uri=msg.get("To") or "", remote_uri=msg.get("From") or "", invite=msg)
        dialog.remote_tag = param(dialog.remote_uri, "tag") or ""
        dialog.remote_target = target
        dialog.route_set = msg.get_all("Record-Route")
        dialog.remote_cseq = msg.cseq[0]
        dialog.remote_media = offer
        # A first offer must name a stream we can send to (port 0 / 0.0.0.0 refuse or hold it).
        usable = offer is not None and offer.port != 0 and offer.address != "0.0.0.0"
        dialog.codec = choose_codec(offer) if usable else None
        endpoint.dialogs[dialog.call_id] = dialog
        if dialog.codec is None:
            self.reject(dialog, 488)  # no G.711 offered; on_invite still hears of it, to log it
        elif endpoint.on_invite is None:
            self.reject(dialog, 480)
        else:
            endpoint.respond(msg, 180, to_tag=dialog.local_tag, contact=True)
        if endpoint.on_invite is not None:
            endpoint.on_invite(dialog)

    def answer(self, dialog: Dialog, rtp_port: int) -> None:
        with self.endpoint.lock:
            if dialog.state is not DialogState.RINGING or dialog.invite is None:
                return
            if dialog.codec is None:
                raise ValueError("no common codec: reject the call with 488")
            dialog.local_sdp = build_sdp(self.endpoint.media_ip, rtp_port, [dialog.codec], dialog.session_id)
            ok = self.endpoint.response(dialog.invite, 200, to_tag=dialog.local_tag, body=dialog.local_sdp,
                                        contact=True)
            dialog.state = DialogState.ANSWERED
            dialog.answered.set()
            self.endpoint.send_response(dialog.invite, ok)
            self._retransmit_ok(dialog, ok, dialog.invite)

    def reject(self, dialog: Dialog, status: int) -> None:
        endpoint = self.endpoint
        with endpoint.lock:
            if dialog.state is not DialogState.RINGING or dialog.invite is None:
                return
            endpoint.send_response(dialog.invite, endpoint.response(dialog.invite, status, to_tag=dialog.local_tag))
            endpoint.end(dialog, EndReason.REJECTED)

    def _retransmit_ok(self, dialog: Dialog, ok: Message, request: Message) -> None:
        """Resend a 2xx to an INVITE until its ACK; without one in 32 s the call is over."""
        endpoint = self.endpoint
        dialog.confirmed.clear()
        started, interval = time.monotonic(), T1

        def again() -> None:
            nonlocal interval
            with endpoint.lock:
                if dialog.confirmed.is_set() or dialog.state is DialogState.ENDED:
                    return
                if time.monotonic() - started >= TIMEOUT:
                    endpoint.send_bye(dialog)
                    endpoint.end(dialog, EndReason.TIMEOUT)
                    return
                endpoint.send(ok, response_address(request))
                interval = min(interval * 2, T2)
                dialog.retransmit = endpoint.timers.later(interval, again)

        dialog.retransmit = endpoint.timers.later(interval, again)

    # inside a dialog

    def dialog_of(self, msg: Message) -> Dialog | None:
        dialog = self.endpoint.dialogs.get(msg.call_id)
        if dialog is None:
            return None
        from_tag, to_tag = param(msg.get("From") or "", "tag"), param(msg.get("To") or "", "tag")
        ours = to_tag if msg.is_request else from_tag
        return dialog if ours == dialog.local_tag else None

    def _answered_dialog(self, msg: Message) -> Dialog | None:
        """The answered dialog ``msg`` belongs to; None (and 481 sent) if there is none."""
        dialog = self.dialog_of(msg)
        if dialog is None or dialog.state is not DialogState.ANSWERED:
            self.endpoint.respond(msg, 481)
            return None
        return dialog

    def on_reinvite(self, msg: Message) -> None:
        """Answer with our same stream (direction mirrored); tell the flow when media moved or was held."""
        endpoint = self.endpoint
        dialog = self._answered_dialog(msg)
        if dialog is None:
            return
        try:
            offer = parse_sdp(msg.body) if msg.body else None
        except SdpError as exc:
            endpoint.respond(msg, 488, extra=[("Warning", f'305 hotline "{exc}"')])
            return
        direction = ANSWER_DIRECTION[offer.direction] if offer else Direction.SENDRECV
        if offer is not None and offer.port == 0:
            direction = Direction.INACTIVE
        sdp = dialog.local_sdp.replace(b"a=sendrecv", f"a={direction.value}".encode()) if dialog.local_sdp else b""
        ok = endpoint.response(msg, 200, body=sdp, contact=True)
        endpoint.send_response(msg, ok)
        self._retransmit_ok(dialog, ok, msg)
        if offer is not None and offer != dialog.remote_media:
            moved = offer.port != 0 and offer.address != "0.0.0.0"
            held = offer.on_hold
            previous = dialog.remote_media
            # A held stream's address may be 0.0.0.0 or port 0: keep sending where we did.
            dialog.remote_media = offer if moved or previous is None else type(offer)(
                previous.address, previous.port, offer.payloads, offer.names, offer.direction)
            if (moved or held != (previous.on_hold if previous else False)) and dialog.on_media:
                dialog.on_media(dialog)

    def on_update(self, msg: Message, _source: tuple[str, int]) -> None:
        dialog = self.dialog_of(msg)
        if dialog is None:
            self.endpoint.respond(msg, 481)
            return
        self.endpoint.respond(msg, 200, body=dialog.local_sdp if msg.body else b"", contact=True)

    def on_ack(self, msg: Message, _source: tuple[str, int]) -> None:
        dialog = self.dialog_of(msg)
        if dialog is not None and dialog.inbound and msg.cseq[0] >= dialog.remote_cseq:
            if dialog.retransmit:
                dialog.retransmit.cancel()
            dialog.confirmed.set()
        # an ACK to a non-2xx final response needs nothing: we stop retransmitting on timeout

    def on_cancel(self, msg: Message, _source: tuple[str, int]) -> None:
        endpoint = self.endpoint
        dialog = endpoint.dialogs.get(msg.call_id)
        if dialog is None or not dialog.inbound or dialog.invite is None or dialog.invite.branch != msg.branch:
            endpoint.respond(msg, 481)
            return
        endpoint.respond(msg, 200)
        if dialog.state is DialogState.RINGING:
            endpoint.send_response(dialog.invite, endpoint.response(dialog.invite, 487, to_tag=dialog.local_tag))
            endpoint.end(dialog, EndReason.CANCELLED)

    def on_bye(self, msg: Message, _source: tuple[str, int]) -> None:
        dialog = self.dialog_of(msg)
        if dialog is None:
            self.endpoint.respond(msg, 481)
            return
        self.endpoint.respond(msg, 200)
        self.endpoint.end(dialog, EndReason.REMOTE_BYE)

    def on_info(self, msg: Message, _source: tuple[str, int]) -> None:
        """SIP INFO key presses (application/dtmf-relay ``Signal=5``, application/dtmf ``5``)."""
        dialog = self.dialog_of(msg)
        if dialog is None:
            self.endpoint.respond(msg, 481)
            return
        self.endpoint.respond(msg, 200)
        body = msg.body.decode("utf-8", "replace").strip()
        match = DTMF_RELAY.search(body)
        digit = match.group(1) if match else body if re.fullmatch(r"[0-9A-D*#]", body) else None
        if digit and dialog.on_dtmf:
            dialog.on_dtmf(digit.upper())

    def on_refer(self, msg: Message, _source: tuple[str, int]) -> None:
        """A blind transfer asked by the far end (RFC 3515): 202 if the flow takes it, then NOTIFYs."""
        endpoint = self.endpoint
        dialog = self._answered_dialog(msg)
        if dialog is None:
            return
        try:
            target = uri_of(msg.get("Refer-To") or "")
            user_of(target) or host_port(target)
        except SipParseError as exc:
            endpoint.respond(msg, 400, extra=[("Warning", f'399 hotline "Refer-To: {exc}"')])
            return
        if dialog.on_refer is None or not dialog.on_refer(dialog, target):
            endpoint.respond(msg, 603)
            return
        endpoint.respond(msg, 202, to_tag=dialog.local_tag, contact=True)
        self.notify_refer(dialog, 100)

    def notify_refer(self, dialog: Dialog, status: int) -> None:
        endpoint = self.endpoint
        with endpoint.lock:
            if dialog.state is DialogState.ENDED:
                return
            notify = dialog.request("NOTIFY", endpoint.sent_by)
            final = status >= 200
            notify.headers += [("Event", "refer"),
                               ("Subscription-State", "terminated;reason=noresource" if final else "active;expires=60"),
                               ("Contact", f"<sip:{user_of(dialog.local_uri) or 'hotline'}@{endpoint.sent_by}>"),
                               ("Content-Type", "message/sipfrag;version=2.0")]
            notify.body = f"SIP/2.0 {status} {reason(status)}\r\n".encode()
            endpoint.request(notify, lambda _r: None, endpoint.destination_of(dialog))

    def on_notify(self, msg: Message, _source: tuple[str, int]) -> None:
        self.endpoint.respond(msg, 200 if self.dialog_of(msg) else 481)
