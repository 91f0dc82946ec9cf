"""The SIP endpoint: one UDP port, the receive loop, dispatch, and the public face of the package.

One receive thread and one timer thread serve every call; callbacks (``on_invite``, a dialog's
hooks) run on them and must return quickly (hand long work to a thread of your own).

Only the PBX (and the addresses ``trusted`` names, e.g. trunks) may open a call: an INVITE from
anywhere else is refused with 403, so a process that reaches Hotline's port directly cannot
bypass the PBX's authentication. Beyond ``max_calls`` dialogs an INVITE gets 503 (Retry-After).
A request that cannot be read gets 400 with the reason, an SDP we cannot use 488: never silence.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable

from telephony.sip.dialog import ALLOW, USER_AGENT, Dialog, DialogState, EndReason
from telephony.sip.message import (
    Message, SipParseError, host_port, parse, param, reason, response_address, split_host_port, uri_of, user_of,
)
from telephony.sip.registration import Account, Registrations
from telephony.sip.timers import TimerThread
from telephony.sip.transaction import TIMEOUT, Transactions
from telephony.sip.uac import Dialling
from telephony.sip.uas import Answering

log = logging.getLogger(__name__)


class Endpoint:
    """Our SIP user agent behind one UDP port; every request leaves through the PBX.

    ``start()`` returns at once: registration runs (and retries) in the background;
    ``wait_registered(timeout)`` tells whether every account is registered.
    """

    def __init__(self, *, local_ip: str, local_port: int, pbx_host: str, pbx_port: int,
                 on_invite: Callable[[Dialog], None] | None = None, expires: int = 300,
                 retry_interval: float = 5.0, keepalive: float = 2.0, media_ip: str | None = None,
                 on_registration: Callable[[Account], None] | None = None,
                 trusted: Iterable[str] = (), max_calls: int = 0) -> None:
        self.local_ip, self.local_port = local_ip, local_port
        self.pbx = (pbx_host, pbx_port)
        self.media_ip = media_ip or local_ip
        self.on_invite = on_invite
        self.max_calls = max_calls  # 0: no limit
        self.trusted = {self._address(a) for a in trusted}
        self.dialogs: dict[str, Dialog] = {}
        self.running = False
        self.lock = threading.RLock()
        self.timers = TimerThread()
        self.transactions = Transactions(self.send, self.timers, self.lock)
        self.registrations = Registrations(self, expires=expires, retry_interval=retry_interval,
                                           keepalive=keepalive, on_registration=on_registration)
        self.answering = Answering(self)
        self.dialling = Dialling(self)
        self._sock: socket.socket | None = None
        self._receiver: threading.Thread | None = None
        self._handlers: dict[str, Callable[[Message, tuple[str, int]], None]] = {
            "INVITE": self._on_invite, "ACK": self.answering.on_ack, "BYE": self.answering.on_bye,
            "CANCEL": self.answering.on_cancel, "OPTIONS": self._on_options, "UPDATE": self.answering.on_update,
            "REGISTER": self._on_register, "INFO": self.answering.on_info, "REFER": self.answering.on_refer,
            "NOTIFY": self.answering.on_notify,
        }

    @property
    def sent_by(self) -> str:
        return f"{self.local_ip}:{self.local_port}"

    @property
    def accounts(self) -> dict[str, Account]:
        return self.registrations.accounts

    @property
    def pbx_server(self) -> str:
        return self.registrations.pbx_server

    # lifecycle

    def add_account(self, user: str, password: str) -> Account:
        return self.registrations.add(user, password)

    def start(self) -> None:
        """Bind the port and start; raises OSError if the port is taken. Never waits for the PBX."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.local_ip, self.local_port))
        sock.settimeout(0.2)
        self._sock = sock
        self.running = True
        self._receiver = threading.Thread(target=self._receive_loop, name="sip-recv", daemon=True)
        self._receiver.start()
        self.registrations.start()

    def stop(self, *, unregister: bool = True) -> None:
        """Hang up every call, unregister (best effort, 1 s) and close the port."""
        for dialog in list(self.dialogs.values()):
            if dialog.state is not DialogState.ENDED:
                self.hangup(dialog)
        if unregister:
            self.registrations.unregister_all()
        self.running = False
        self.timers.stop()
        if self._receiver:
            self._receiver.join(2)  # the port is free for a successor once recvfrom returned
        if self._sock:
            self._sock.close()

    def wait_registered(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.registrations.all_registered():
                return True
            time.sleep(0.02)
        return self.registrations.all_registered()

    # transport

    def send(self, msg: Message, destination: tuple[str, int]) -> None:
        """Send, never raise: a failed send is logged and left to the transaction timers."""
        if self._sock is None:
            return
        try:
            self._sock.sendto(msg.encode(), destination)
        except (OSError, OverflowError, ValueError, TypeError) as exc:
            log.warning("cannot send %s to %s: %s", msg.start[:60], destination, exc)

    def request(self, msg: Message, on_response: Callable[[Message | None], None],
                destination: tuple[str, int] | None = None) -> None:
        """Send a request in a client transaction (retransmitted; ``None`` after Timer B/F)."""
        self.transactions.request(msg, destination or self.pbx, on_response)

    def _receive_loop(self) -> None:
        assert self._sock is not None
        while self.running:
            try:
                data, source = self._sock.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                if not self.running:
                    return
                continue  # ICMP errors surface here on Linux; the transaction timers handle them
            if data.strip():  # else a CRLF keep-alive
                self._receive(data, source)

    def _receive(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            msg = parse(data)
        except SipParseError as exc:
            self._refuse_unreadable(data, source, str(exc))
            return
        if msg.is_request:
            stamp_via(msg, source)
        try:
            self._dispatch(msg, source)
        except Exception:
            log.exception("failed handling %s from %s", msg.start[:60], source)
            if msg.is_request and msg.method not in ("ACK", "INVITE"):
                self.respond(msg, 500)

    def _refuse_unreadable(self, data: bytes, source: tuple[str, int], why: str) -> None:
        """400 to a request we cannot read, sent back where it came from (its Via may be the broken part)."""
        log.info("unreadable datagram from %s:%d: %s", *source, why)
        first = data.split(b"\n", 1)[0]
        if first.startswith(b"SIP/") or first.startswith(b"ACK "):
            return
        lines = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].split(b"\n")[1:]
        keep = [line for line in lines if line.split(b":", 1)[0].strip().lower()
                in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")]
        reply = b"SIP/2.0 400 Bad Request\r\n" + b"".join(line.strip() + b"\r\n" for line in keep)
        reply += f"Warning: 399 hotline \"{why[:100]}\"\r\nContent-Length: 0\r\n\r\n".encode("ascii", "replace")
        if self._sock is not None:
            try:
                self._sock.sendto(reply, source)
            except OSError:
                pass

    def _dispatch(self, msg: Message, source: tuple[str, int]) -> None:
        with self.lock:
            if not msg.is_request:
                if not self.transactions.on_response(msg) and msg.method == "INVITE" and 200 <= msg.status < 300:
                    self.dialling.resend_ack(msg)
                return
            sent = self.transactions.sent_response(msg)
            if sent is not None and msg.method != "ACK":
                self.send(sent, response_address(msg))  # a retransmitted request
                return
            handler = self._handlers.get(msg.method)
            if handler is None:
                self.respond(msg, 501)
            else:
                handler(msg, source)

    # responses

    def response(self, request: Message, status: int, *, to_tag: str | None = None, body: bytes = b"",
                 contact: bool = False, extra: list[tuple[str, str]] | None = None,
                 content_type: str = "application/sdp") -> Message:
        """A response to ``request``: every Via, From, To (+ our tag), Call-ID, CSeq copied."""
        msg = Message(f"SIP/2.0 {status} {reason(status)}")
        for hname, value in request.headers:
            if hname.lower() in ("via", "from", "call-id", "cseq") or (
                    hname.lower() == "record-route" and 100 < status < 300):
                msg.headers.append((hname, value))
        to = request.get("To") or ""
        if to_tag and param(to, "tag") is None:
            to = f"{to};tag={to_tag}"
        msg.headers.append(("To", to))
        if contact:
            msg.headers.append(("Contact", f"<sip:{user_of(to) or 'hotline'}@{self.sent_by}>"))
        msg.headers += [("Allow", ALLOW), ("User-Agent", USER_AGENT)] + (extra or [])
        if body:
            msg.headers.append(("Content-Type", content_type))
            msg.body = body
        return msg

    def respond(self, request: Message, status: int, **kwargs: object) -> Message:
        msg = self.response(request, status, **kwargs)  # type: ignore[arg-type]
        self.send_response(request, msg)
        return msg

    def send_response(self, request: Message, msg: Message) -> None:
        self.transactions.remember_response(request, msg)
        self.send(msg, response_address(request))

    # requests we answer ourselves

    def _on_options(self, msg: Message, _source: tuple[str, int]) -> None:
        self.respond(msg, 200, extra=[("Accept", "application/sdp")])

    def _on_register(self, msg: Message, _source: tuple[str, int]) -> None:
        self.respond(msg, 405)

    def _on_invite(self, msg: Message, source: tuple[str, int]) -> None:
        if param(msg.get("To") or "", "tag"):
            self.answering.on_reinvite(msg)
            return
        if msg.call_id in self.dialogs:
            return  # a retransmission of an INVITE we are still working on
        if not self._may_call(source):
            log.warning("INVITE from %s:%d refused: not the PBX nor a trusted source", *source)
            self.respond(msg, 403, extra=[("Warning", '399 hotline "calls come through the PBX"')])
            return
        if self.max_calls and self.active_calls() >= self.max_calls:
            log.warning("INVITE from %s refused: %d calls up (sip.max_calls)", user_of(msg.get("From") or ""),
                        self.max_calls)
            self.respond(msg, 503, extra=[("Retry-After", "5")])
            return
        self.answering.on_invite(msg)

    def _may_call(self, source: tuple[str, int]) -> bool:
        return source == self.pbx or source in self.trusted or (source[0], 0) in self.trusted

    @staticmethod
    def _address(text: str) -> tuple[str, int]:
        """``host`` (any port) or ``host:port``; a bad entry raises ValueError naming it."""
        try:
            host, port = split_host_port(text.strip(), 0) if ":" in text else (text.strip(), 0)
        except SipParseError as exc:
            raise ValueError(f"sip.trusted_sources: {text!r} is not host or host:port") from exc
        return host, port

    def active_calls(self) -> int:
        return sum(1 for d in self.dialogs.values() if d.state is not DialogState.ENDED)

    # every dialog

    def answer(self, dialog: Dialog, rtp_port: int) -> None:
        self.answering.answer(dialog, rtp_port)

    def reject(self, dialog: Dialog, status: int) -> None:
        self.answering.reject(dialog, status)

    def notify_refer(self, dialog: Dialog, status: int) -> None:
        self.answering.notify_refer(dialog, status)

    def dial(self, target: str, rtp_port: int, *, from_user: str | None = None,
             on_end: Callable[[Dialog], None] | None = None, caller_id: str | None = None,
             timeout: float | None = None) -> Dialog:
        """Call ``target`` (a number or a SIP URI) through the PBX; see ``Dialling.dial``."""
        return self.dialling.dial(target, rtp_port, from_user=from_user, on_end=on_end, caller_id=caller_id,
                                  timeout=timeout)

    def hangup(self, dialog: Dialog) -> None:
        with self.lock:
            if dialog.state is DialogState.ENDED:
                return
            if dialog.state is DialogState.ANSWERED:
                self.send_bye(dialog)
                self.end(dialog, EndReason.LOCAL_BYE)
            elif dialog.inbound:
                self.reject(dialog, 480)
            else:
                self.dialling.cancel(dialog, EndReason.LOCAL_BYE)

    def send_bye(self, dialog: Dialog) -> None:
        bye = dialog.request("BYE", self.sent_by)
        self.request(bye, lambda r: setattr(dialog, "bye_status", r.status if r else 408),
                     self.destination_of(dialog))

    def destination_of(self, dialog: Dialog) -> tuple[str, int]:
        """Next hop of an in-dialog request: the first Route, else the far end's Contact (both checked)."""
        return host_port(uri_of(dialog.route_set[0]) if dialog.route_set else dialog.remote_target)

    def end(self, dialog: Dialog, end_reason: EndReason) -> None:
        """The dialog is over: ``on_end`` runs once; retransmissions are still answered for 32 s."""
        if dialog.state is DialogState.ENDED:
            return
        dialog.state = DialogState.ENDED
        dialog.end_reason = end_reason
        if dialog.retransmit:
            dialog.retransmit.cancel()
        dialog.ended.set()
        self.timers.later(TIMEOUT, lambda: self._forget(dialog))
        if dialog.on_end:
            try:
                dialog.on_end(dialog)
            except Exception:
                log.exception("on_end of %s failed", dialog.call_id)

    def _forget(self, dialog: Dialog) -> None:
        with self.lock:
            if self.dialogs.get(dialog.call_id) is dialog:
                del self.dialogs[dialog.call_id]


def stamp_via(request: Message, source: tuple[str, int]) -> None:
    """RFC 3581: an empty ``rport`` asks for the response at the port the request came from."""
    for index, (name, value) in enumerate(request.headers):
        if name.lower() in ("via", "v"):
            top, sep, rest = value.partition(",")
            if param(top, "rport") == "":
                top = re.sub(r";\s*rport(?=;|$)", f";received={source[0]};rport={source[1]}", top.rstrip(), count=1)
                request.headers[index] = (name, top + sep + rest)
            return
