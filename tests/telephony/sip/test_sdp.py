"""SDP offers: what Hotline can answer, and a reason for what it cannot."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from telephony.sip.sdp import Direction, SdpError, parse_sdp

OFFER = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"


@pytest.mark.parametrize("bad, why", [
    ("m=audio 4000 ", "m=audio abc "),
    ("m=audio 4000 ", "m=audio 70000 "),
    ("c=IN IP4 127.0.0.1", "c=IN IP4 999.1.1.1"),
    ("c=IN IP4 127.0.0.1", "c=IN IP6 ::1"),
    ("RTP/AVP 0 101", "RTP/AVP x"),
])
def test_unusable_offers_are_refused_with_a_reason(bad: str, why: str) -> None:
    with pytest.raises(SdpError):
        parse_sdp(OFFER.replace(bad, why).encode())


def test_hold_directions_are_read() -> None:
    assert not parse_sdp(OFFER.encode()).on_hold  # type: ignore[union-attr]
    held = parse_sdp((OFFER + "a=sendonly\r\n").encode())
    assert held is not None and held.direction is Direction.SENDONLY and held.on_hold
    assert parse_sdp(OFFER.replace("127.0.0.1", "0.0.0.0").encode()).on_hold  # type: ignore[union-attr]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=400))
def test_any_body_parses_or_raises_sdp_error(body: bytes) -> None:
    try:
        offer = parse_sdp(body)
    except SdpError:
        return
    assert offer is None or 0 <= offer.port <= 65535
