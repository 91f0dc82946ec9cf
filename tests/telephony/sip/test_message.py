"""Reading SIP from the wire: everything that parses is safe to use; everything else says why."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from telephony.sip.message import SipParseError, host_port, parse, response_address, uri_of

INVITE = (
    "INVITE sip:1000@127.0.0.1:5162 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bK-1;rport\r\n"
    "From: <sip:13800138000@127.0.0.1>;tag=a1\r\n"
    "To: <sip:1000@127.0.0.1>\r\n"
    "Call-ID: fuzz-1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:13800138000@127.0.0.1:5170>\r\n"
    "Content-Type: application/sdp\r\n"
    "\r\n"
)


def invite(**replace: str) -> bytes:
    text = INVITE
    for old, new in replace.items():
        text = text.replace(old.replace("_", "-"), new)
    return text.encode()


def test_a_good_invite_parses() -> None:
    msg = parse(invite())
    assert msg.method == "INVITE" and response_address(msg) == ("127.0.0.1", 5160)


@pytest.mark.parametrize("bad, why", [
    ({"SIP/2.0/UDP 127.0.0.1:5160": "SIP/2.0/UDP127.0.0.1:5160"}, "bad Via"),  # a Via without a space
    ({"rport": "rport=abc"}, "bad port"),
    ({"rport": "rport=70000"}, "bad port"),
    ({"127.0.0.1:5160;branch": "127.0.0.1:0;branch"}, "bad port"),
    ({"<sip:13800138000@127.0.0.1:5170>": "<sip:13800138000@127.0.0.1:99999>"}, "bad port"),  # Contact port
    ({"<sip:13800138000@127.0.0.1:5170>": "<sip:13800138000@127.0.0.1:5170"}, "no '>'"),  # Contact without >
    ({"CSeq: 1 INVITE": "CSeq: x INVITE"}, "bad CSeq"),
    ({"CSeq: 1 INVITE": "CSeq: 1 BYE"}, "CSeq method"),
    ({"Call-ID: fuzz-1\r\n": ""}, "no Call-ID"),
])
def test_hostile_headers_are_refused_with_a_reason(bad: dict[str, str], why: str) -> None:
    text = INVITE
    for old, new in bad.items():
        text = text.replace(old, new, 1)
    with pytest.raises(SipParseError, match=why):
        parse(text.encode())


def test_ipv6_references_and_default_ports_are_read() -> None:
    assert host_port("sip:a@[::1]:5080") == ("::1", 5080)
    assert host_port("sip:a@example.com") == ("example.com", 5060)
    assert uri_of('"A, B" <sip:a@h>;tag=1') == "sip:a@h"


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_sip_parse_error(data: bytes) -> None:
    try:
        parse(data)
    except SipParseError:
        pass


@settings(max_examples=3000, deadline=None)
@given(st.data())
def test_a_mutated_invite_that_parses_is_safe_to_answer(data: st.DataObject) -> None:
    """Flip, cut and insert bytes of a real INVITE: what parses has a usable reply address and Contact."""
    raw = bytearray(invite())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:at + data.draw(st.integers(1, 20))]
        else:
            raw[at:at] = data.draw(st.sampled_from([b":", b";", b"<", b">", b" ", b"\r\n", b"99999", b"=", b"\x00",
                                                    b"rport=", b"[", b"]", b"\xff"]))
        if not raw:
            return
    try:
        msg = parse(bytes(raw))
    except SipParseError:
        return
    host, port = response_address(msg)
    assert host and 1 <= port <= 65535
    for contact in msg.get_all("Contact"):
        if contact != "*":
            assert 1 <= host_port(uri_of(contact))[1] <= 65535
