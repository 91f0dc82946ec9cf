"""SDP offer/answer for one G.711 audio stream, with telephone-event and hold directions.

``parse_sdp`` checks what it reads: a port outside 0–65535, a payload list that is not numbers
or an address that is not IPv4 raises ``SdpError`` (the endpoint answers 488 with the reason),
so the media engine is never handed an address it cannot send to.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

STATIC_PAYLOADS = {0: "PCMU", 8: "PCMA"}
OUR_CODECS = ("PCMU", "PCMA")
DTMF = "telephone-event"
OUR_DTMF_PT = 101


class SdpError(ValueError):
    """An SDP body we cannot use; the message says why."""


class Direction(str, Enum):
    """RFC 3264 stream directions: a party on hold sends ``sendonly`` (or ``inactive``)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


@dataclass(frozen=True)
class MediaOffer:
    """The audio stream of a far end's SDP: where to send RTP and the payloads it lists, in order."""

    address: str
    port: int
    payloads: tuple[int, ...]
    names: dict[int, str]  # payload type → "PCMU/8000" (rtpmap, or the static table)
    direction: Direction = Direction.SENDRECV

    @property
    def on_hold(self) -> bool:
        """The far end put us on hold: it will not listen (RFC 3264 §8.4, and the old c=0.0.0.0 form)."""
        return self.port == 0 or self.address == "0.0.0.0" or self.direction in (Direction.SENDONLY,
                                                                                   Direction.INACTIVE)


@dataclass(frozen=True)
class Codec:
    payload_type: int
    name: str  # PCMU or PCMA
    dtmf_payload_type: int | None


def parse_sdp(body: bytes) -> MediaOffer | None:
    """The first audio stream of an SDP body, or None when there is none."""
    address, port, payloads, names = "", -1, (), {}
    direction = session_direction = Direction.SENDRECV
    in_audio = seen_audio = False
    for raw in body.decode("utf-8", "replace").splitlines():
        kind, _, value = raw.strip().partition("=")
        if kind == "m":
            in_audio = not seen_audio and value.startswith("audio ")
            if in_audio:
                seen_audio = True
                port, payloads = _media_line(value)
                direction = session_direction
        elif kind == "c" and (in_audio or not seen_audio):
            address = _address(value)
        elif kind == "a" and value in Direction._value2member_map_:
            if in_audio:
                direction = Direction(value)
            elif not seen_audio:
                session_direction = Direction(value)
        elif kind == "a" and in_audio and value.startswith("rtpmap:"):
            pt, _, name = value[7:].partition(" ")
            if pt.isdigit():
                names[int(pt)] = name.strip()
    if not seen_audio:
        return None
    if not address:
        raise SdpError("no connection address (c=) for the audio stream")
    for pt in payloads:
        if pt not in names and pt in STATIC_PAYLOADS:
            names[pt] = f"{STATIC_PAYLOADS[pt]}/8000"
    return MediaOffer(address, port, payloads, names, direction)


def _media_line(value: str) -> tuple[int, tuple[int, ...]]:
    fields = value.split()
    if len(fields) < 4:
        raise SdpError(f"bad media line m={value[:60]}")
    port = fields[1].split("/")[0]
    if not port.isdigit() or int(port) > 65535:
        raise SdpError(f"bad audio port {port[:20]!r}")
    if not all(p.isdigit() and int(p) <= 127 for p in fields[3:]):
        raise SdpError(f"bad payload list in m={value[:60]}")
    return int(port), tuple(int(p) for p in fields[3:])


def _address(value: str) -> str:
    fields = value.split()
    if len(fields) != 3 or fields[:2] != ["IN", "IP4"]:
        raise SdpError(f"unsupported connection line c={value[:60]} (IPv4 only)")
    address = fields[2].split("/")[0]
    try:
        ipaddress.IPv4Address(address)
    except ValueError as exc:
        raise SdpError(f"bad connection address {address[:40]!r}") from exc
    return address


def choose_codec(offer: MediaOffer) -> Codec | None:
    """G.711 in the offer's order of preference, with telephone-event/8000 if offered."""
    dtmf = next((pt for pt in offer.payloads if offer.names.get(pt, "").lower() == f"{DTMF}/8000"), None)
    for pt in offer.payloads:
        name = offer.names.get(pt, "").split("/")
        if name[0].upper() in OUR_CODECS and (len(name) < 2 or name[1] == "8000"):
            return Codec(pt, name[0].upper(), dtmf)
    return None


def build_sdp(ip: str, port: int, codecs: list[Codec], session_id: int, version: int = 1,
              direction: Direction = Direction.SENDRECV) -> bytes:
    """Our SDP: one audio stream at the media engine's port, G.711 and telephone-event."""
    pts = [c.payload_type for c in codecs]
    dtmf = next((c.dtmf_payload_type for c in codecs if c.dtmf_payload_type is not None), None)
    lines = ["v=0", f"o=hotline {session_id} {version} IN IP4 {ip}", "s=Hotline", f"c=IN IP4 {ip}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(str(p) for p in pts + ([dtmf] if dtmf is not None else []))}"]
    lines += [f"a=rtpmap:{c.payload_type} {c.name}/8000" for c in codecs]
    if dtmf is not None:
        lines += [f"a=rtpmap:{dtmf} {DTMF}/8000", f"a=fmtp:{dtmf} 0-16"]
    lines += ["a=ptime:20", f"a={direction.value}"]
    return ("\r\n".join(lines) + "\r\n").encode()
