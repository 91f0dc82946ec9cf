"""The dialling side: INVITEs we send, their ACK, and CANCEL when we give up.

``dial`` returns at once. The far end's 401/407 is answered once with the account's digest; a
2xx gets the correct ACK (its To-tag, its Contact as R-URI, the Record-Route reversed — pyVoIP's
ACK got all three wrong); a call not answered within its timeout is CANCELled (RFC 3261 §9) and
ends as NO_ANSWER, and if the far end never confirms the CANCEL either, the INVITE transaction
is given up 32 s later.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from telephony.sip.dialog import ALLOW, Dialog, DialogState, EndReason
from telephony.sip.message import Message, new_tag, param, uri_of, user_of
from telephony.sip.registration import Account, digest
from telephony.sip.sdp import OUR_DTMF_PT, Codec, SdpError, build_sdp, choose_codec, parse_sdp
from telephony.sip.transaction import TIMEOUT

if TYPE_CHECKING:
    from telephony.sip.endpoint import Endpoint

OFFER = [Codec(0, "PCMU", OUR_DTMF_PT), Codec(8, "PCMA", OUR_DTMF_PT)]


class Dialling:
    """The user-agent-client half of an endpoint."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def dial(self, target: str, rtp_port: int, *, from_user: str | None = None,
             on_end: Callable[[Dialog], None] | None = None, caller_id: str | None = None,
             timeout: float | None = None) -> Dialog:
        """Call ``target`` (a number or a SIP URI) through the PBX, offering G.711 at ``rtp_port``.

        ``from_user`` is the account we call as (default: the first hotline number); ``caller_id``
        the number the far end's phone shows (display name and P-Asserted-Identity: an agent sees
        the customer's number); ``timeout`` seconds of ringing before CANCEL (None: until the far
        end answers or refuses). ``dialog.wait_answered(t)`` waits for the answer (ACK sent).
        """
        endpoint = self.endpoint
        accounts = endpoint.accounts
        account = accounts.get(from_user or "") or next(iter(accounts.values()), None)
        user = from_user or (account.user if account else "hotline")
        pbx = f"{endpoint.pbx[0]}:{endpoint.pbx[1]}"
        uri = target if target.startswith("sip:") else f"sip:{target}@{pbx}"
        display = f'"{caller_id}" ' if caller_id else ""
        dialog = Dialog(endpoint, inbound=False, call_id=f"{uuid.uuid4()}@{endpoint.local_ip}", local_tag=new_tag(),
                        local_uri=f"{display}<sip:{user}@{pbx}>", remote_uri=f"<{uri}>")
        dialog.on_end = on_end
        dialog.remote_target = uri
        dialog.local_sdp = build_sdp(endpoint.media_ip, rtp_port, OFFER, dialog.session_id)
        extra = [("P-Asserted-Identity", f"<sip:{caller_id}@{pbx}>")] if caller_id else []
        with endpoint.lock:
            endpoint.dialogs[dialog.call_id] = dialog
            self._send_invite(dialog, account, None, extra)
            if timeout is not None:
                dialog.retransmit = endpoint.timers.later(timeout, lambda: self._give_up(dialog))
        return dialog

    def _send_invite(self, dialog: Dialog, account: Account | None, authorization: tuple[str, str] | None,
                     extra: list[tuple[str, str]]) -> None:
        endpoint = self.endpoint
        invite = dialog.request("INVITE", endpoint.sent_by)
        invite.headers.append(("Contact", f"<sip:{user_of(dialog.local_uri)}@{endpoint.sent_by}>"))
        invite.headers.append(("Allow", ALLOW))
        invite.headers += extra
        if authorization:
            invite.headers.append(authorization)
        invite.headers.append(("Content-Type", "application/sdp"))
        invite.body = dialog.local_sdp
        dialog.invite = invite
        endpoint.request(invite, lambda r: self._on_response(dialog, account, invite, r, authorization, extra))

    def _on_response(self, dialog: Dialog, account: Account | None, invite: Message, msg: Message | None,
                     authorization: tuple[str, str] | None, extra: list[tuple[str, str]]) -> None:
        endpoint = self.endpoint
        if msg is None:
            endpoint.end(dialog, EndReason.TIMEOUT)
            return
        dialog.status = msg.status
        if msg.status >= 300:
            self._ack_failure(invite, msg)
            if msg.status in (401, 407) and account and authorization is None and dialog.state is DialogState.RINGING:
                self._send_invite(dialog, account, digest(account, msg, "INVITE", dialog.remote_target), extra)
                return
            endpoint.end(dialog, EndReason.REJECTED)  # after our CANCEL, its 487 finds the dialog ended already
            return
        self._confirm(dialog, msg)

    def _confirm(self, dialog: Dialog, ok: Message) -> None:
        """The correct ACK: the 200's To-tag, its Contact as R-URI, Record-Route reversed."""
        endpoint = self.endpoint
        dialog.remote_uri = ok.get("To") or dialog.remote_uri
        dialog.remote_tag = param(dialog.remote_uri, "tag") or ""
        dialog.remote_target = uri_of(ok.get("Contact") or dialog.remote_target)
        dialog.route_set = list(reversed(ok.get_all("Record-Route")))
        ack = dialog.request("ACK", endpoint.sent_by, cseq=ok.cseq[0])
        dialog.ack = ack
        endpoint.send(ack, endpoint.destination_of(dialog))
        if dialog.state is DialogState.ENDED:
            endpoint.send_bye(dialog)  # answered after we gave up (the CANCEL crossed the 200)
            return
        try:
            dialog.remote_media = parse_sdp(ok.body)
        except SdpError:
            dialog.remote_media = None
        dialog.codec = choose_codec(dialog.remote_media) if dialog.remote_media else None
        if dialog.retransmit:
            dialog.retransmit.cancel()
        if dialog.codec is None:  # answered without a stream we can use: nothing to talk over
            endpoint.send_bye(dialog)
            endpoint.end(dialog, EndReason.FAILED)
            return
        dialog.state = DialogState.ANSWERED
        dialog.answered.set()

    def resend_ack(self, ok: Message) -> None:
        """A retransmitted 2xx (our ACK was lost): the same ACK again."""
        dialog = self.endpoint.dialogs.get(ok.call_id)
        if dialog is not None and not dialog.inbound and dialog.ack is not None:
            self.endpoint.send(dialog.ack, self.endpoint.destination_of(dialog))

    def _ack_failure(self, invite: Message, response: Message) -> None:
        """ACK to a non-2xx final response: same branch and R-URI as the INVITE (hop by hop)."""
        ack = Message(f"ACK {invite.uri} SIP/2.0")
        ack.headers.append(("Via", invite.get_all("Via")[0]))
        ack.headers += [("Max-Forwards", "70"), ("From", invite.get("From") or ""),
                        ("To", response.get("To") or ""), ("Call-ID", invite.call_id),
                        ("CSeq", f"{invite.cseq[0]} ACK")]
        ack.headers += [("Route", r) for r in invite.get_all("Route")]
        self.endpoint.send(ack, self.endpoint.pbx)

    def _give_up(self, dialog: Dialog) -> None:
        with self.endpoint.lock:
            if dialog.state is DialogState.RINGING:
                self.cancel(dialog, EndReason.NO_ANSWER)

    def cancel(self, dialog: Dialog, end_reason: EndReason) -> None:
        """CANCEL our unanswered INVITE; its 487 (or, failing that, Timer B) closes the transaction."""
        endpoint = self.endpoint
        invite = dialog.invite
        if invite is None:
            return
        cancel = Message(f"CANCEL {invite.uri} SIP/2.0")
        cancel.headers.append(("Via", invite.get_all("Via")[0]))
        cancel.headers += [("Max-Forwards", "70"), ("From", invite.get("From") or ""), ("To", invite.get("To") or ""),
                           ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq[0]} CANCEL")]
        cancel.headers += [("Route", r) for r in invite.get_all("Route")]
        endpoint.request(cancel, lambda _r: None)
        endpoint.transactions.give_up_after(invite, TIMEOUT)
        endpoint.end(dialog, end_reason)
