"""SIP signalling: registration at the PBX, inbound and outbound calls over UDP, with our own SDP.

This is the only module that imports pyVoIP. pyVoIP 1.6.8's call handling cannot be used as is
(see ``shared/sip-notes.md``): its ACK on outbound calls is malformed, its BYE copies the
INVITE's Via headers, a re-INVITE restarts RTP and leaks threads, ``start()`` blocks 30 s
without a registrar, an empty header breaks its parser, Call-IDs repeat across runs and its
own RTP runs three threads per call. Its ``SIPClient`` shares one socket between a blocking
registration and its receive loop, so it cannot be kept for transport either. What remains of it
here is the status table (reason phrases); messages, transactions, dialogs, digest auth and
SDP are ours, small, and tested against Kamailio, baresip, linphone and sipp. Media never
passes through this module: an answer's SDP points at a port of the media engine.

One receive thread and one timer thread serve every call; callbacks run on them and must
return quickly (hand long work to a thread of your own).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP cannot be imported first: circular import)
from pyVoIP.SIP import SIPStatus

log = logging.getLogger(__name__)

T1 = 0.5  # RFC 3261 retransmission timers
T2 = 4.0
TIMEOUT = 32.0  # 64 × T1: a transaction without a final response fails
USER_AGENT = "Hotline"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"
COMPACT = {"i": "call-id", "m": "contact", "f": "from", "t": "to", "v": "via", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}
# Headers that may hold several comma-separated values in one line.
LIST_HEADERS = {"via", "route", "record-route", "contact"}


class SipParseError(ValueError):
    """Not a SIP message we can read; the datagram is dropped."""


def reason(status: int) -> str:
    try:
        return SIPStatus(status).phrase
    except ValueError:
        return "Unknown"


# --- messages ---------------------------------------------------------------------------------

@dataclass
class Message:
    """A SIP request or response: start line, headers in order (names as written), body."""

    start: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0] if self.is_request else self.cseq[1]

    @property
    def uri(self) -> str:
        return self.start.split(" ")[1]

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.start.split(" ")[1])

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = (self.get("CSeq") or "0 NONE").split()
        return int(number), method.upper()

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def branch(self) -> str:
        vias = self.get_all("Via")
        return param(vias[0], "branch") or "" if vias else ""

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        out: list[str] = []
        for hname, value in self.headers:
            if hname.lower() == key:
                out.extend(split_list(value) if key in LIST_HEADERS else [value])
        return out

    def encode(self) -> bytes:
        lines = [self.start]
        lines += [f"{n}: {v}" for n, v in self.headers if n.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse(data: bytes) -> Message:
    """Read one datagram; tolerant of empty headers, folded lines, compact names and bare LF."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, _, body = data.partition(b"\n\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError("not UTF-8") from exc
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    parts = start.split(" ")
    is_response = parts[0] == "SIP/2.0" and len(parts) >= 2 and parts[1].isdigit()
    is_request = len(parts) == 3 and parts[2] == "SIP/2.0" and re.fullmatch(r"[A-Z]+", parts[0])
    if not (is_response or is_request):
        raise SipParseError(f"bad start line {start[:60]!r}")
    msg = Message(start)
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and msg.headers:
            name, value = msg.headers[-1]
            msg.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        name = name.strip()
        msg.headers.append((COMPACT.get(name.lower(), name) if len(name) == 1 else name, value.strip()))
    length = msg.get("Content-Length")
    msg.body = body[: int(length)] if length and length.isdigit() else body
    for required in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not msg.get(required):
            raise SipParseError(f"no {required} header")
    try:
        msg.cseq  # noqa: B018  (validates)
    except ValueError as exc:
        raise SipParseError("bad CSeq") from exc
    return msg


def split_list(value: str) -> list[str]:
    """Split ``a, <b,c>, "x,y" <d>`` at commas outside quotes and angle brackets."""
    out, depth, quoted, current = [], 0, False, []
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        elif ch == "," and not quoted and depth == 0:
            out.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    out.append("".join(current).strip())
    return [v for v in out if v]


def param(value: str, name: str) -> str | None:
    """A ``;name=value`` parameter of a header, outside its <URI>."""
    tail = value.rsplit(">", 1)[-1] if "<" in value else value
    for part in tail.split(";")[1:]:
        key, _, val = part.partition("=")
        if key.strip().lower() == name:
            return val.strip()
    return None


def uri_of(value: str) -> str:
    """The URI of a name-addr (``"A" <sip:a@h>;tag=1``) or an addr-spec (``sip:a@h;tag=1``)."""
    if "<" in value:
        return value[value.index("<") + 1: value.index(">")]
    return value.split(";", 1)[0].strip()


def user_of(value: str) -> str:
    uri = uri_of(value)
    rest = uri.split(":", 1)[-1]
    return rest.split("@", 1)[0] if "@" in rest else ""


def host_port(uri: str, default_port: int = 5060) -> tuple[str, int]:
    rest = uri.split(":", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    hostport = rest.rsplit("@", 1)[-1]
    host, _, port = hostport.partition(":")
    return host, int(port) if port.isdigit() else default_port


def response_address(request: Message) -> tuple[str, int]:
    """Where a response goes (RFC 3261 18.2.2 and RFC 3581): top Via's received/rport or sent-by."""
    via = request.get_all("Via")[0]
    sent_by = via.split(None, 1)[1].split(";", 1)[0]
    host, _, port = sent_by.partition(":")
    host = param(via, "received") or host
    rport = param(via, "rport")
    return host, int(rport) if rport else int(port) if port else 5060


def new_tag() -> str:
    return uuid.uuid4().hex[:16]


def new_branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex


# --- SDP --------------------------------------------------------------------------------------

STATIC_PAYLOADS = {0: "PCMU", 8: "PCMA"}
OUR_CODECS = ("PCMU", "PCMA")
DTMF = "telephone-event"
OUR_DTMF_PT = 101


@dataclass(frozen=True)
class MediaOffer:
    """The audio stream of a far end's SDP: where to send RTP and the payloads it lists, in order."""

    address: str
    port: int
    payloads: tuple[int, ...]
    names: dict[int, str]  # payload type → "PCMU/8000" (rtpmap, or the static table)


@dataclass(frozen=True)
class Codec:
    payload_type: int
    name: str  # PCMU or PCMA
    dtmf_payload_type: int | None


def parse_sdp(body: bytes) -> MediaOffer | None:
    """The first audio stream of an SDP body, or None when there is none (or no usable address)."""
    address, port, payloads, names = "", -1, (), {}
    in_audio = seen_audio = False
    for raw in body.decode("utf-8", "replace").splitlines():
        kind, _, value = raw.strip().partition("=")
        if kind == "m":
            in_audio = not seen_audio and value.startswith("audio ")
            if in_audio:
                seen_audio = True
                fields = value.split()
                port = int(fields[1].split("/")[0])
                payloads = tuple(int(p) for p in fields[3:] if p.isdigit())
        elif kind == "c" and (in_audio or not seen_audio):
            address = value.split()[-1].split("/")[0]
        elif kind == "a" and in_audio and value.startswith("rtpmap:"):
            pt, _, name = value[7:].partition(" ")
            if pt.isdigit():
                names[int(pt)] = name.strip()
    if not seen_audio or not address:
        return None
    for pt in payloads:
        if pt not in names and pt in STATIC_PAYLOADS:
            names[pt] = f"{STATIC_PAYLOADS[pt]}/8000"
    return MediaOffer(address, port, payloads, names)


def choose_codec(offer: MediaOffer) -> Codec | None:
    """G.711 in the offer's order of preference, with telephone-event/8000 if offered."""
    dtmf = next((pt for pt in offer.payloads if offer.names.get(pt, "").lower() == f"{DTMF}/8000"), None)
    for pt in offer.payloads:
        name = offer.names.get(pt, "").split("/")
        if name[0].upper() in OUR_CODECS and (len(name) < 2 or name[1] == "8000"):
            return Codec(pt, name[0].upper(), dtmf)
    return None


def build_sdp(ip: str, port: int, codecs: list[Codec], session_id: int, version: int = 1) -> bytes:
    """Our SDP: one audio stream at the media engine's port, G.711 and telephone-event."""
    pts = [c.payload_type for c in codecs]
    dtmf = next((c.dtmf_payload_type for c in codecs if c.dtmf_payload_type is not None), None)
    lines = ["v=0", f"o=hotline {session_id} {version} IN IP4 {ip}", "s=Hotline", f"c=IN IP4 {ip}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(str(p) for p in pts + ([dtmf] if dtmf is not None else []))}"]
    lines += [f"a=rtpmap:{c.payload_type} {c.name}/8000" for c in codecs]
    if dtmf is not None:
        lines += [f"a=rtpmap:{dtmf} {DTMF}/8000", f"a=fmtp:{dtmf} 0-16"]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


# --- timers -----------------------------------------------------------------------------------

class Timer:
    """A pending action of the timer thread; ``cancel()`` is idempotent."""

    def __init__(self, due: float, action: Callable[[], None]) -> None:
        self.due, self.action, self.cancelled = due, action, False

    def cancel(self) -> None:
        self.cancelled = True


class TimerThread:
    """One thread running every delayed action (retransmissions, refreshes), in due order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="sip-timers", daemon=True)
        self._thread.start()

    def later(self, delay: float, action: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, action)
        with self._cv:
            heapq.heappush(self._heap, (timer.due, next(self._seq), timer))
            self._cv.notify()
        return timer

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify()
        self._thread.join(2)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._running and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if not self._running:
                    return
                _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                try:
                    timer.action()
                except Exception:
                    log.exception("timer action failed")


# --- calls ------------------------------------------------------------------------------------

class CallState(str, Enum):
    RINGING = "ringing"  # inbound offered / outbound dialling
    ANSWERED = "answered"
    ENDED = "ended"


class EndReason(str, Enum):
    CANCELLED = "cancelled"  # the caller gave up before the answer
    REMOTE_BYE = "remote_bye"
    LOCAL_BYE = "local_bye"
    REJECTED = "rejected"  # we refused it (or the far end refused our INVITE: see ``status``)
    TIMEOUT = "timeout"  # no ACK to our 200 OK, or no final answer to our INVITE
    FAILED = "failed"


class Call:
    """One dialog. Inbound: ``answer(rtp_port)`` or ``reject(status)``; either side: ``hangup()``.

    An inbound INVITE without G.711 is refused with 488 before ``on_invite`` sees it (ended,
    ``end_reason`` REJECTED), so the call can still be logged.

    ``on_end(call)`` runs once when the call ends (``end_reason`` set); ``on_media(call)`` when a
    re-INVITE moved the far end's media. ``remote_media`` and ``codec`` describe the stream.
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
        self.state = CallState.RINGING
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
        self.on_end: Callable[[Call], None] | None = None
        self.on_media: Callable[[Call], None] | None = None
        self.confirmed = threading.Event()  # inbound: ACK to our 200 OK arrived
        self._ok: Message | None = None  # inbound: our 200 OK, retransmitted until ACK
        self._ack: Message | None = None  # outbound: our ACK, resent on 200 OK retransmissions
        self._retransmit: Timer | None = None

    @property
    def caller(self) -> str:
        """The calling party's user part (the customer's number, inbound)."""
        return user_of(self.remote_uri if self.inbound else self.local_uri)

    @property
    def callee(self) -> str:
        return user_of(self.local_uri if self.inbound else self.remote_uri)

    def answer(self, rtp_port: int) -> None:
        """Answer with our SDP: the chosen codec at ``rtp_port`` of ``endpoint.media_ip``."""
        self.endpoint.answer(self, rtp_port)

    def reject(self, status: int = 486) -> None:
        self.endpoint.reject(self, status)

    def hangup(self) -> None:
        """BYE when answered; CANCEL while dialling out; 480 to an inbound call still ringing."""
        self.endpoint.hangup(self)

    def wait_answered(self, timeout: float) -> bool:
        """Outbound: True once the far end answered (ACK sent); False on failure or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.ended.is_set():
            if self.answered.wait(0.05):
                return True
        return self.answered.is_set()

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.caller}→{self.callee} {self.state.value}>"


# --- the endpoint -----------------------------------------------------------------------------

@dataclass
class Account:
    """One registered user (a hotline number) at the PBX."""

    user: str
    password: str
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4()}")
    tag: str = field(default_factory=new_tag)
    cseq: int = 0
    registered: bool = False
    expires_at: float = 0.0
    last_error: str = ""
    refresh: Timer | None = None


@dataclass
class ClientTransaction:
    request: Message
    destination: tuple[str, int]
    on_response: Callable[[Message | None], None]
    started: float = field(default_factory=time.monotonic)
    interval: float = T1
    provisional: bool = False
    timer: Timer | None = None


class Endpoint:
    """Our SIP user agent behind one UDP port; every request leaves through the PBX.

    ``start()`` returns at once: registration runs (and retries) in the background;
    ``wait_registered(timeout)`` tells whether every account is registered. A keep-alive
    OPTIONS to the PBX notices a PBX that went away or restarted and registers again.
    """

    def __init__(self, *, local_ip: str, local_port: int, pbx_host: str, pbx_port: int,
                 on_invite: Callable[[Call], None] | None = None, expires: int = 300,
                 retry_interval: float = 5.0, keepalive: float = 2.0, media_ip: str | None = None,
                 on_registration: Callable[[Account], None] | None = None) -> None:
        self.local_ip, self.local_port = local_ip, local_port
        self.pbx = (pbx_host, pbx_port)
        self.media_ip = media_ip or local_ip
        self.on_invite = on_invite
        self.on_registration = on_registration
        self.expires = expires
        self.retry_interval = retry_interval
        self.keepalive = keepalive
        self.accounts: dict[str, Account] = {}
        self.calls: dict[str, Call] = {}
        self.pbx_server = ""  # Server header of the PBX's last keep-alive answer
        self._lock = threading.RLock()
        self._transactions: dict[str, ClientTransaction] = {}
        self._responses: dict[tuple[str, str], tuple[float, Message]] = {}  # (branch, method) → sent
        self._sock: socket.socket | None = None
        self._timers: TimerThread | None = None
        self._receiver: threading.Thread | None = None
        self._running = False
        self._pbx_alive = True
        self._handlers: dict[str, Callable[[Message], None]] = {
            "INVITE": self._on_invite, "ACK": self._on_ack, "BYE": self._on_bye, "CANCEL": self._on_cancel,
            "OPTIONS": self._on_options, "UPDATE": self._on_update, "REGISTER": self._on_register,
        }

    # lifecycle

    def add_account(self, user: str, password: str) -> Account:
        account = Account(user, password)
        self.accounts[user] = account
        if self._running:
            self._register(account)
        return account

    def start(self) -> None:
        """Bind the port and start; raises OSError if the port is taken. Never waits for the PBX."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.local_ip, self.local_port))
        sock.settimeout(0.2)
        self._sock = sock
        self._running = True
        self._timers = TimerThread()
        self._receiver = threading.Thread(target=self._receive_loop, name="sip-recv", daemon=True)
        self._receiver.start()
        for account in self.accounts.values():
            self._register(account)
        if self.keepalive:
            self._timers.later(self.keepalive, self._ping)

    def stop(self, *, unregister: bool = True) -> None:
        """Hang up every call, unregister (best effort, 1 s) and close the port."""
        for call in list(self.calls.values()):
            if call.state is not CallState.ENDED:
                self.hangup(call)
        if unregister:
            for account in self.accounts.values():
                if account.registered:
                    self._register(account, expires=0)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and any(a.registered for a in self.accounts.values()):
                time.sleep(0.02)
        self._running = False
        if self._timers:
            self._timers.stop()
        if self._receiver:
            self._receiver.join(2)  # the port is free for a successor once recvfrom returned
        if self._sock:
            self._sock.close()

    def wait_registered(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(a.registered for a in self.accounts.values()):
                return True
            time.sleep(0.02)
        return all(a.registered for a in self.accounts.values())

    # transport

    def send(self, msg: Message, destination: tuple[str, int]) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(msg.encode(), destination)
        except OSError as exc:
            log.warning("cannot send %s to %s: %s", msg.start, destination, exc)

    def _receive_loop(self) -> None:
        assert self._sock is not None
        while self._running:
            try:
                data, source = self._sock.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                if not self._running:
                    return
                continue  # ICMP errors surface here on Linux; the transaction timers handle them
            if not data.strip():
                continue  # CRLF keep-alives
            try:
                msg = parse(data)
            except (SipParseError, ValueError, IndexError) as exc:
                log.info("dropped unreadable datagram from %s: %s", source, exc)
                continue
            try:
                self._dispatch(msg, source)
            except Exception:
                log.exception("failed handling %s", msg.start)

    def _dispatch(self, msg: Message, source: tuple[str, int]) -> None:
        with self._lock:
            if not msg.is_request:
                self._on_response(msg)
                return
            sent = self._responses.get((msg.branch, msg.method))
            if sent and msg.method != "ACK":
                self.send(sent[1], response_address(msg))  # a retransmitted request
                return
            handler = self._handlers.get(msg.method)
            if handler is None:
                self.respond(msg, 501)
            else:
                handler(msg)

    # client transactions

    def request(self, msg: Message, on_response: Callable[[Message | None], None],
                destination: tuple[str, int] | None = None) -> None:
        """Send a request, retransmitting on T1/T2 until a final response (or None after 32 s)."""
        tx = ClientTransaction(msg, destination or self.pbx, on_response)
        with self._lock:
            self._transactions[msg.branch] = tx
        self.send(msg, tx.destination)
        self._schedule_retransmit(tx)

    def _schedule_retransmit(self, tx: ClientTransaction) -> None:
        assert self._timers is not None
        tx.timer = self._timers.later(tx.interval, lambda: self._retransmit_request(tx))

    def _retransmit_request(self, tx: ClientTransaction) -> None:
        with self._lock:
            if self._transactions.get(tx.request.branch) is not tx:
                return
            if time.monotonic() - tx.started >= TIMEOUT:
                del self._transactions[tx.request.branch]
                timed_out = True
            else:
                timed_out = False
                if not tx.provisional:  # an INVITE with 1xx waits for the answer silently
                    self.send(tx.request, tx.destination)
                tx.interval = min(tx.interval * 2, T2) if tx.request.method != "INVITE" else tx.interval * 2
        if timed_out:
            tx.on_response(None)
        else:
            self._schedule_retransmit(tx)

    def _on_response(self, msg: Message) -> None:
        tx = self._transactions.get(msg.branch)
        if tx is None:
            if msg.method == "INVITE" and 200 <= msg.status < 300:
                self._resend_ack(msg)
            return
        if msg.status < 200:
            tx.provisional = True
            if msg.method == "INVITE":
                tx.interval = TIMEOUT * 5  # RFC 3261 Timer C-ish: wait for the far end to answer
                tx.started = time.monotonic()
            return
        del self._transactions[msg.branch]
        if tx.timer:
            tx.timer.cancel()
        tx.on_response(msg)

    # server side: responses

    def response(self, request: Message, status: int, *, to_tag: str | None = None, body: bytes = b"",
                 contact: bool = False, extra: list[tuple[str, str]] | None = None) -> Message:
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
            msg.headers.append(("Contact", f"<sip:{user_of(to) or 'hotline'}@{self.local_ip}:{self.local_port}>"))
        msg.headers += [("Allow", ALLOW), ("User-Agent", USER_AGENT)] + (extra or [])
        if body:
            msg.headers.append(("Content-Type", "application/sdp"))
            msg.body = body
        return msg

    def respond(self, request: Message, status: int, **kwargs: object) -> Message:
        msg = self.response(request, status, **kwargs)  # type: ignore[arg-type]
        self._send_response(request, msg)
        return msg

    def _send_response(self, request: Message, msg: Message) -> None:
        now = time.monotonic()
        self._responses[(request.branch, request.method)] = (now, msg)
        for key, (sent_at, _) in list(self._responses.items()):
            if now - sent_at > TIMEOUT:
                del self._responses[key]
        self.send(msg, response_address(request))

    # server side: requests

    def _on_options(self, msg: Message) -> None:
        self.respond(msg, 200, extra=[("Accept", "application/sdp")])

    def _on_register(self, msg: Message) -> None:
        self.respond(msg, 405)

    def _dialog_of(self, msg: Message) -> Call | None:
        call = self.calls.get(msg.call_id)
        if call is None:
            return None
        from_tag, to_tag = param(msg.get("From") or "", "tag"), param(msg.get("To") or "", "tag")
        ours = to_tag if msg.is_request else from_tag
        return call if ours == call.local_tag else None

    def _on_invite(self, msg: Message) -> None:
        if param(msg.get("To") or "", "tag"):
            self._on_reinvite(msg)
            return
        if msg.call_id in self.calls:
            return  # a retransmission of an INVITE we are still working on
        self.respond(msg, 100)
        call = Call(self, inbound=True, call_id=msg.call_id, local_tag=new_tag(),
                    local_uri=msg.get("To") or "", remote_uri=msg.get("From") or "", invite=msg)
        call.remote_tag = param(call.remote_uri, "tag") or ""
        call.remote_target = uri_of(msg.get("Contact") or call.remote_uri)
        call.route_set = msg.get_all("Record-Route")
        call.remote_cseq = msg.cseq[0]
        call.remote_media = parse_sdp(msg.body)
        call.codec = choose_codec(call.remote_media) if call.remote_media else None
        self.calls[call.call_id] = call
        if call.codec is None:
            self.reject(call, 488)  # no G.711 offered; on_invite still hears of it, to log it
        elif self.on_invite is None:
            self.reject(call, 480)
        else:
            self.respond(msg, 180, to_tag=call.local_tag, contact=True)
        if self.on_invite is not None:
            self.on_invite(call)

    def _on_reinvite(self, msg: Message) -> None:
        """Answer a re-INVITE with the same SDP: media keeps running on the same port."""
        call = self._dialog_of(msg)
        if call is None or call.state is not CallState.ANSWERED:
            self.respond(msg, 481)
            return
        offer = parse_sdp(msg.body) if msg.body else None
        if offer is not None and offer.port == 0:
            offer = None  # a held stream: keep the address we know
        ok = self.response(msg, 200, body=call.local_sdp, contact=True)
        self._send_response(msg, ok)
        self._retransmit_ok(call, ok, msg)
        if offer and (offer.address, offer.port) != (call.remote_media.address if call.remote_media else None,
                                                     call.remote_media.port if call.remote_media else None):
            call.remote_media = offer
            if call.on_media:
                call.on_media(call)

    def _on_update(self, msg: Message) -> None:
        call = self._dialog_of(msg)
        if call is None:
            self.respond(msg, 481)
            return
        self.respond(msg, 200, body=call.local_sdp if msg.body else b"", contact=True)

    def _on_ack(self, msg: Message) -> None:
        call = self._dialog_of(msg)
        if call is not None and call.inbound and msg.cseq[0] >= call.remote_cseq:
            if call._retransmit:
                call._retransmit.cancel()
            call.confirmed.set()
        # an ACK to a non-2xx final response needs nothing: we stop retransmitting on timeout

    def _on_cancel(self, msg: Message) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or not call.inbound or call.invite is None or call.invite.branch != msg.branch:
            self.respond(msg, 481)
            return
        self.respond(msg, 200)
        if call.state is CallState.RINGING:
            self._send_response(call.invite, self.response(call.invite, 487, to_tag=call.local_tag))
            self._end(call, EndReason.CANCELLED)

    def _on_bye(self, msg: Message) -> None:
        call = self._dialog_of(msg)
        if call is None:
            self.respond(msg, 481)
            return
        self.respond(msg, 200)
        self._end(call, EndReason.REMOTE_BYE)

    # answering

    def answer(self, call: Call, rtp_port: int) -> None:
        with self._lock:
            if call.state is not CallState.RINGING or call.invite is None:
                return
            if call.codec is None:
                raise ValueError("no common codec: reject the call with 488")
            call.local_sdp = build_sdp(self.media_ip, rtp_port, [call.codec], call.session_id)
            ok = self.response(call.invite, 200, to_tag=call.local_tag, body=call.local_sdp, contact=True)
            call.state = CallState.ANSWERED
            call.answered.set()
            self._send_response(call.invite, ok)
            self._retransmit_ok(call, ok, call.invite)

    def _retransmit_ok(self, call: Call, ok: Message, request: Message) -> None:
        """Resend a 2xx to an INVITE until its ACK; without one in 32 s the call is over."""
        assert self._timers is not None
        call.confirmed.clear()
        started, interval = time.monotonic(), T1

        def again() -> None:
            nonlocal interval
            with self._lock:
                if call.confirmed.is_set() or call.state is CallState.ENDED:
                    return
                if time.monotonic() - started >= TIMEOUT:
                    self._send_bye(call)
                    self._end(call, EndReason.TIMEOUT)
                    return
                self.send(ok, response_address(request))
                interval = min(interval * 2, T2)
                call._retransmit = self._timers.later(interval, again)  # type: ignore[union-attr]

        call._retransmit = self._timers.later(interval, again)

    def reject(self, call: Call, status: int) -> None:
        with self._lock:
            if call.state is not CallState.RINGING or call.invite is None:
                return
            self._send_response(call.invite, self.response(call.invite, status, to_tag=call.local_tag))
            self._end(call, EndReason.REJECTED)

    def hangup(self, call: Call) -> None:
        with self._lock:
            if call.state is CallState.ENDED:
                return
            if call.state is CallState.ANSWERED:
                self._send_bye(call)
                self._end(call, EndReason.LOCAL_BYE)
            elif call.inbound:
                self.reject(call, 480)
            else:
                self._cancel(call)

    def _end(self, call: Call, end_reason: EndReason) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.end_reason = end_reason
        if call._retransmit:
            call._retransmit.cancel()
        call.ended.set()
        assert self._timers is not None
        # Keep the dialog a while for retransmitted BYEs and 2xx; then forget it.
        self._timers.later(TIMEOUT, lambda: self._forget(call))
        if call.on_end:
            try:
                call.on_end(call)
            except Exception:
                log.exception("on_end of %s failed", call.call_id)

    def _forget(self, call: Call) -> None:
        with self._lock:
            if self.calls.get(call.call_id) is call:
                del self.calls[call.call_id]

    # in-dialog requests we send

    def in_dialog_request(self, call: Call, method: str, cseq: int | None = None) -> Message:
        """A request inside the dialog: R-URI = the far end's Contact, Route = the route set."""
        if cseq is None:
            call.local_cseq += 1
            cseq = call.local_cseq
        msg = Message(f"{method} {call.remote_target} SIP/2.0")
        msg.headers.append(("Via", f"SIP/2.0/UDP {self.local_ip}:{self.local_port};branch={new_branch()};rport"))
        local = call.local_uri if param(call.local_uri, "tag") else f"{call.local_uri};tag={call.local_tag}"
        remote = call.remote_uri if param(call.remote_uri, "tag") else (
            f"{call.remote_uri};tag={call.remote_tag}" if call.remote_tag else call.remote_uri)
        msg.headers += [("Max-Forwards", "70"), ("From", local), ("To", remote), ("Call-ID", call.call_id),
                        ("CSeq", f"{cseq} {method}")]
        msg.headers += [("Route", r) for r in call.route_set]
        msg.headers.append(("User-Agent", USER_AGENT))
        return msg

    def destination_of(self, call: Call) -> tuple[str, int]:
        """Next hop of an in-dialog request: the first Route, else the far end's Contact."""
        return host_port(uri_of(call.route_set[0]) if call.route_set else call.remote_target)

    def _send_bye(self, call: Call) -> None:
        bye = self.in_dialog_request(call, "BYE")
        self.request(bye, lambda r: setattr(call, "bye_status", r.status if r else 408), self.destination_of(call))

    # outbound calls

    def dial(self, target: str, rtp_port: int, *, from_user: str | None = None,
             on_end: Callable[[Call], None] | None = None) -> Call:
        """Call ``target`` (a number or a SIP URI) through the PBX, offering G.711 at ``rtp_port``.

        Returns at once; ``call.wait_answered(timeout)`` waits for the answer (our ACK is sent).
        """
        account = next(iter(self.accounts.values()), None)
        user = from_user or (account.user if account else "hotline")
        pbx = f"{self.pbx[0]}:{self.pbx[1]}"
        uri = target if target.startswith("sip:") else f"sip:{target}@{pbx}"
        call = Call(self, inbound=False, call_id=f"{uuid.uuid4()}@{self.local_ip}", local_tag=new_tag(),
                    local_uri=f"<sip:{user}@{pbx}>", remote_uri=f"<{uri}>")
        call.on_end = on_end
        call.remote_target = uri
        offer = [Codec(0, "PCMU", OUR_DTMF_PT), Codec(8, "PCMA", OUR_DTMF_PT)]
        call.local_sdp = build_sdp(self.media_ip, rtp_port, offer, call.session_id)
        with self._lock:
            self.calls[call.call_id] = call
            self._send_invite(call, account, authorization=None)
        return call

    def _send_invite(self, call: Call, account: Account | None, authorization: tuple[str, str] | None) -> None:
        invite = self.in_dialog_request(call, "INVITE")
        invite.headers.append(("Contact", f"<sip:{user_of(call.local_uri)}@{self.local_ip}:{self.local_port}>"))
        invite.headers.append(("Allow", ALLOW))
        if authorization:
            invite.headers.append(authorization)
        invite.headers.append(("Content-Type", "application/sdp"))
        invite.body = call.local_sdp
        call.invite = invite
        self.request(invite, lambda r: self._on_invite_response(call, account, invite, r, authorization))

    def _on_invite_response(self, call: Call, account: Account | None, invite: Message, msg: Message | None,
                            authorization: tuple[str, str] | None) -> None:
        if msg is None:
            self._end(call, EndReason.TIMEOUT)
            return
        call.status = msg.status
        if msg.status >= 300:
            self._ack_failure(invite, msg)
            if msg.status in (401, 407) and account and authorization is None and call.state is CallState.RINGING:
                self._send_invite(call, account, digest(account, msg, "INVITE", call.remote_target))
                return
            self._end(call, EndReason.REJECTED)  # after our CANCEL, its 487 finds the call ended already
            return
        self._confirm_outbound(call, msg)

    def _confirm_outbound(self, call: Call, ok: Message) -> None:
        """The correct ACK: the 200's To-tag, its Contact as R-URI, Record-Route reversed."""
        call.remote_uri = ok.get("To") or call.remote_uri
        call.remote_tag = param(call.remote_uri, "tag") or ""
        call.remote_target = uri_of(ok.get("Contact") or call.remote_target)
        call.route_set = list(reversed(ok.get_all("Record-Route")))
        call.remote_media = parse_sdp(ok.body)
        call.codec = choose_codec(call.remote_media) if call.remote_media else None
        ack = self.in_dialog_request(call, "ACK", cseq=ok.cseq[0])
        call._ack = ack
        self.send(ack, self.destination_of(call))
        if call.state is CallState.RINGING:
            call.state = CallState.ANSWERED
            call.answered.set()
        elif call.state is CallState.ENDED:
            self._send_bye(call)  # answered after we gave up (CANCEL crossed the 200)

    def _resend_ack(self, ok: Message) -> None:
        call = self.calls.get(ok.call_id)
        if call is not None and not call.inbound and call._ack is not None:
            self.send(call._ack, self.destination_of(call))

    def _ack_failure(self, invite: Message, response: Message) -> None:
        """ACK to a non-2xx final response: same branch and R-URI as the INVITE (hop by hop)."""
        ack = Message(f"ACK {invite.uri} SIP/2.0")
        ack.headers.append(("Via", invite.get_all("Via")[0]))
        ack.headers += [("Max-Forwards", "70"), ("From", invite.get("From") or ""),
                        ("To", response.get("To") or ""), ("Call-ID", invite.call_id),
                        ("CSeq", f"{invite.cseq[0]} ACK")]
        ack.headers += [("Route", r) for r in invite.get_all("Route")]
        self.send(ack, self.pbx)

    def _cancel(self, call: Call) -> None:
        invite = call.invite
        if invite is None:
            return
        cancel = Message(f"CANCEL {invite.uri} SIP/2.0")
        cancel.headers.append(("Via", invite.get_all("Via")[0]))
        cancel.headers += [("Max-Forwards", "70"), ("From", invite.get("From") or ""), ("To", invite.get("To") or ""),
                           ("Call-ID", invite.call_id), ("CSeq", f"{invite.cseq[0]} CANCEL")]
        cancel.headers += [("Route", r) for r in invite.get_all("Route")]
        self.request(cancel, lambda _r: None)
        self._end(call, EndReason.LOCAL_BYE)

    # registration

    def _register(self, account: Account, expires: int | None = None,
                  authorization: tuple[str, str] | None = None) -> None:
        if not self._running:
            return
        expires = self.expires if expires is None else expires
        account.cseq += 1
        host = self.pbx[0]
        msg = Message(f"REGISTER sip:{host} SIP/2.0")
        msg.headers += [
            ("Via", f"SIP/2.0/UDP {self.local_ip}:{self.local_port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{account.user}@{host}>;tag={account.tag}"),
            ("To", f"<sip:{account.user}@{host}>"),
            ("Call-ID", account.call_id),
            ("CSeq", f"{account.cseq} REGISTER"),
            ("Contact", f"<sip:{account.user}@{self.local_ip}:{self.local_port}>"),
            ("Expires", str(expires)),
            ("User-Agent", USER_AGENT),
        ]
        if authorization:
            msg.headers.append(authorization)
        self.request(msg, lambda r: self._on_register_response(account, expires, authorization, r))

    def _on_register_response(self, account: Account, expires: int, authorization: tuple[str, str] | None,
                              msg: Message | None) -> None:
        if msg is not None and msg.status in (401, 407) and authorization is None:
            self._register(account, expires, digest(account, msg, "REGISTER", f"sip:{self.pbx[0]}"))
            return
        ok = msg is not None and 200 <= msg.status < 300
        if msg is not None and msg.get("Server"):
            self.pbx_server = msg.get("Server") or ""  # the boot the keep-alive compares with
        if expires == 0:
            account.registered = False
            return
        if ok:
            assert msg is not None
            granted = self._granted_expires(msg, expires)
            account.registered, account.last_error = True, ""
            account.expires_at = time.monotonic() + granted
            self._schedule_register(account, max(1.0, granted / 2))
        else:
            account.registered = False
            account.last_error = "no answer from the PBX" if msg is None else f"{msg.status} {reason(msg.status)}"
            log.warning("registration of %s failed: %s", account.user, account.last_error)
            self._schedule_register(account, self.retry_interval)
        if self.on_registration:
            self.on_registration(account)

    def _granted_expires(self, ok: Message, asked: int) -> int:
        ours = f"{self.local_ip}:{self.local_port}"
        for contact in ok.get_all("Contact"):
            if ours in contact and (value := param(contact, "expires")) and value.isdigit():
                return int(value)
        value = ok.get("Expires")
        return int(value) if value and value.isdigit() else asked

    def _schedule_register(self, account: Account, delay: float) -> None:
        if account.refresh:
            account.refresh.cancel()
        assert self._timers is not None
        account.refresh = self._timers.later(delay, lambda: self._register(account))

    def _ping(self) -> None:
        """OPTIONS to the PBX; on a PBX that came back or restarted (new Server header), register."""
        if not self._running:
            return
        host = self.pbx[0]
        msg = Message(f"OPTIONS sip:{host}:{self.pbx[1]} SIP/2.0")
        msg.headers += [
            ("Via", f"SIP/2.0/UDP {self.local_ip}:{self.local_port};branch={new_branch()};rport"),
            ("Max-Forwards", "70"), ("From", f"<sip:hotline@{self.local_ip}>;tag={new_tag()}"),
            ("To", f"<sip:{host}>"), ("Call-ID", f"{uuid.uuid4()}"), ("CSeq", "1 OPTIONS"),
            ("User-Agent", USER_AGENT),
        ]
        answers: list[Message] = []
        self.request(msg, lambda response: answers.append(response) if response is not None else None)

        def check() -> None:
            with self._lock:
                self._transactions.pop(msg.branch, None)
            self._after_ping(answers[0] if answers else None)
            self._ping()

        assert self._timers is not None
        self._timers.later(self.keepalive, check)

    def _after_ping(self, response: Message | None) -> None:
        alive = response is not None
        server = (response.get("Server") or "") if response is not None else self.pbx_server
        restarted = alive and (not self._pbx_alive or (self.pbx_server and server != self.pbx_server))
        self._pbx_alive = alive
        if alive:
            self.pbx_server = server
        if restarted:
            log.info("PBX is back (%s): registering again", server)
            for account in self.accounts.values():
                self._register(account)


def digest(account: Account, challenge: Message, method: str, uri: str) -> tuple[str, str]:
    """The Authorization (or Proxy-Authorization) header answering a 401/407 (RFC 2617, MD5)."""
    name = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', (challenge.get(name) or "").removeprefix("Digest ")))
    realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
    ha1 = hashlib.md5(f"{account.user}:{realm}:{account.password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    value = f'Digest username="{account.user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5'
    if "auth" in fields.get("qop", "").split(","):
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        value += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    value += f', response="{response}"'
    if fields.get("opaque"):
        value += f', opaque="{fields["opaque"]}"'
    header = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
    return header, value
