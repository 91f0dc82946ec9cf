"""SIP messages: parse and encode, header helpers, status reasons.

Everything read from the wire is checked here, once: a message that parses has a readable start
line, the five mandatory headers, a numeric CSeq and a top Via whose sent-by, ``rport`` and
``received`` are usable (ports within 1–65535), so no later step can fail on them. Parse errors
say what is wrong; the endpoint answers a request it cannot read with 400 and that reason.

The status table (reason phrases) is the one thing Hotline takes from pyVoIP; this module is the
only one that imports it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP cannot be imported first: circular import)
from pyVoIP.SIP import SIPStatus

COMPACT = {"i": "call-id", "m": "contact", "f": "from", "t": "to", "v": "via", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}
# Headers that may hold several comma-separated values in one line.
LIST_HEADERS = {"via", "route", "record-route", "contact"}
REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
HOST = re.compile(r"[A-Za-z0-9.\-]+|[0-9A-Fa-f:.]+")  # a name, IPv4, or IPv6 (brackets removed)


class SipParseError(ValueError):
    """Not a SIP message we can read; the message says why."""


def reason(status: int) -> str:
    try:
        return SIPStatus(status).phrase
    except ValueError:
        return "Unknown"


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
    msg = Message(_start_line(lines[0].strip()))
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
    _validate(msg)
    return msg


def _start_line(start: str) -> str:
    parts = start.split(" ")
    is_response = parts[0] == "SIP/2.0" and len(parts) >= 2 and parts[1].isdigit() and 100 <= int(parts[1]) <= 699
    is_request = len(parts) == 3 and parts[2] == "SIP/2.0" and re.fullmatch(r"[A-Z]+", parts[0]) and ":" in parts[1]
    if not (is_response or is_request):
        raise SipParseError(f"bad start line {start[:60]!r}")
    return start


def _validate(msg: Message) -> None:
    for required in REQUIRED:
        if not msg.get(required):
            raise SipParseError(f"no {required} header")
    cseq = (msg.get("CSeq") or "").split()
    if len(cseq) != 2 or not cseq[0].isdigit() or int(cseq[0]) >= 2**31:
        raise SipParseError("bad CSeq")
    if msg.is_request and cseq[1].upper() != msg.method:
        raise SipParseError("CSeq method differs from the request's")
    sent_by(msg.get_all("Via")[0])
    for name in ("From", "To"):
        uri_of(msg.get(name) or "")
    for contact in msg.get_all("Contact"):
        if contact != "*":
            host_port(uri_of(contact))


def sent_by(via: str) -> tuple[str, int]:
    """Where a Via says responses go: (host, port), with ``received``/``rport`` (RFC 3261 18.2.2, RFC 3581)."""
    protocol, _, rest = via.partition(" ")
    if not protocol.upper().startswith("SIP/2.0/") or not rest.strip():
        raise SipParseError(f"bad Via {via[:60]!r}")
    host, port = split_host_port(rest.strip().split(";", 1)[0].strip(), 5060)
    received, rport = param(via, "received"), param(via, "rport")
    if received:
        host = _host(received)
    if rport:
        port = _port(rport)
    return host, port


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
        start, end = value.index("<") + 1, value.find(">")
        if end < start:
            raise SipParseError(f"no '>' in {value[:60]!r}")
        return value[start:end]
    return value.split(";", 1)[0].strip()


def user_of(value: str) -> str:
    uri = uri_of(value)
    rest = uri.split(":", 1)[-1]
    return rest.split("@", 1)[0] if "@" in rest else ""


def host_port(uri: str, default_port: int = 5060) -> tuple[str, int]:
    """Host and port of a SIP URI; raises SipParseError for a host or port that cannot be used."""
    if ":" not in uri:
        raise SipParseError(f"not a URI: {uri[:60]!r}")
    rest = uri.split(":", 1)[1].split(";", 1)[0].split("?", 1)[0]
    return split_host_port(rest.rsplit("@", 1)[-1], default_port)


def split_host_port(hostport: str, default_port: int) -> tuple[str, int]:
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    return _host(host), _port(port) if port else default_port


def _host(host: str) -> str:
    if not host or not HOST.fullmatch(host):
        raise SipParseError(f"bad host {host[:60]!r}")
    return host


def _port(port: str) -> int:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SipParseError(f"bad port {port[:20]!r}")
    return int(port)


def response_address(request: Message) -> tuple[str, int]:
    """Where a response goes: the top Via's received/rport or sent-by (checked by ``parse``)."""
    return sent_by(request.get_all("Via")[0])


def new_tag() -> str:
    return uuid.uuid4().hex[:16]


def new_branch() -> str:
    return "z9hG4bK" + uuid.uuid4().hex
