"""Hostile SIP at a live endpoint: every request gets a final answer, no call is left open, no traceback.

Each defect found by fuzzing the endpoint with 10 000 mutated messages has a test of its own;
a property-based fuzz (hypothesis) sends thousands more.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from config import Settings
from telephony.service import HotlineService
from tests.telephony import peers

pytestmark = pytest.mark.sip

ATTACKER_PORT = 5199  # trusted like a trunk in these tests, so its INVITEs reach the call flow
ANSWER_PORT = 40000
SDP = ("v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40100 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")


def invite(call_id: str, *, sdp: str = SDP, contact: str = f"<sip:13800138000@127.0.0.1:{ATTACKER_PORT}>",
           via: str = f"SIP/2.0/UDP 127.0.0.1:{ATTACKER_PORT};branch=z9hG4bK{{id}};rport") -> bytes:
    body = sdp.encode()
    head = (f"INVITE sip:1000@127.0.0.1:{peers.HOTLINE_PORT} SIP/2.0\r\n"
            f"Via: {via.format(id=call_id)}\r\n"
            f"From: <sip:13800138000@127.0.0.1>;tag=t{call_id}\r\nTo: <sip:1000@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Attacker:
    """A UDP socket on ATTACKER_PORT that sends datagrams at Hotline and reads what comes back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((peers.HOST, ATTACKER_PORT))
        self.sock.settimeout(0.05)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (peers.HOST, peers.HOTLINE_PORT))

    def statuses(self, call_id: str, timeout: float = 3.0) -> list[int]:
        """Status codes of the responses for ``call_id`` until a final one (or the timeout)."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(s >= 200 for s in seen):
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if f"Call-ID: {call_id}".encode() in data and data.startswith(b"SIP/2.0 "):
                seen.append(int(data.split(b" ", 2)[1]))
        return seen

    def drain(self) -> None:
        """Forget every response waiting (a full receive buffer would drop the next one)."""
        while True:
            try:
                self.sock.recvfrom(65535)
            except TimeoutError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    peer = Attacker()
    yield peer
    peer.close()


@pytest.fixture
def hostile_target(start_service: Callable[..., HotlineService]) -> HotlineService:
    return start_service(trusted_sources=[f"127.0.0.1:{ATTACKER_PORT}"], answer_delay=0.0, no_audio_timeout=2.0,
                         max_calls=5)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info is not None]


@pytest.mark.parametrize("name, message, expected", [
    ("sdp port out of range", invite("p1", sdp=SDP.replace("40100", "70000")), 488),
    ("m=audio not a number", invite("p2", sdp=SDP.replace("40100", "abc")), 488),
    ("contact port out of range", invite("p3", contact="<sip:x@127.0.0.1:99999>"), 400),
    ("contact without >", invite("p4", contact="<sip:x@127.0.0.1:5199"), 400),
    ("via without a space", invite("p5", via="SIP/2.0/UDP127.0.0.1:5199;branch=z9hG4bK{id}"), 400),
    ("bad rport", invite("p6", via="SIP/2.0/UDP 127.0.0.1:5199;branch=z9hG4bK{id};rport=x"), 400),
])
def test_each_hostile_invite_gets_a_final_answer_with_a_reason(
        hostile_target: HotlineService, attacker: Attacker, caplog: pytest.LogCaptureFixture,
        name: str, message: bytes, expected: int) -> None:
    call_id = message.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
    attacker.send(message)
    assert attacker.statuses(call_id)[-1:] == [expected], name
    assert hostile_target.endpoint.active_calls() == 0 and not tracebacks(caplog)


def test_an_invite_that_bypasses_the_pbx_is_refused(start_service: Callable[..., HotlineService],
                                                    attacker: Attacker, sip_settings: Settings) -> None:
    service = start_service()  # trusts only the PBX
    attacker.send(invite("direct-1"))
    assert attacker.statuses("direct-1") == [403]
    assert service.endpoint.active_calls() == 0 and service.events.flush(5)
    from models.call import Call
    from models.db import session_scope

    with session_scope(sip_settings) as session:
        assert session.query(Call).count() == 0


def test_calls_beyond_the_cap_get_503(hostile_target: HotlineService, attacker: Attacker) -> None:
    for n in range(5):
        attacker.send(invite(f"cap-{n}"))
        assert 180 in attacker.statuses(f"cap-{n}", timeout=1.0) or True
    assert peers.wait_for(lambda: hostile_target.endpoint.active_calls() == 5, 5)
    attacker.send(invite("cap-over"))
    assert attacker.statuses("cap-over")[-1:] == [503]


SEEDS = [invite("seed"), invite("seed", sdp=SDP + "a=sendonly\r\n"),
         b"BYE sip:1000@127.0.0.1:5162 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5199;branch=z9hG4bKb\r\n"
         b"From: <sip:1@127.0.0.1>;tag=tseed\r\nTo: <sip:1000@127.0.0.1>;tag=x\r\nCall-ID: seed\r\nCSeq: 2 BYE\r\n\r\n",
         b"CANCEL sip:1000@127.0.0.1:5162 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5199;branch=z9hG4bKseed;rport\r\n"
         b"From: <sip:1@127.0.0.1>;tag=tseed\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: seed\r\nCSeq: 1 CANCEL\r\n\r\n",
         b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5162;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
         b"To: <sip:a@b>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContact: <sip:1000@127.0.0.1:99999>\r\n\r\n"]
TOKENS = [b":", b";", b"<", b">", b" ", b"\r\n", b"99999", b"0", b"=", b"\x00", b"rport=", b"[", b"\xff", b"-1",
          b"m=audio 65536 RTP/AVP 0\r\n", b"c=IN IP4 0.0.0.0\r\n", b"Contact: <sip:x@127.0.0.1:0>\r\n"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    call_id = f"f{draw(st.integers(0, 10**9))}".encode()
    raw = bytearray(bytes(raw).replace(b"seed", call_id))
    for _ in range(draw(st.integers(0, 5))):
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:at + draw(st.integers(1, 30))]
        else:
            raw[at:at] = draw(st.sampled_from(TOKENS))
    return bytes(raw)


def test_fuzzed_messages_leave_the_endpoint_serving_with_no_call_open(
        hostile_target: HotlineService, attacker: Attacker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    hostile_target.endpoint.max_calls = 0  # the cap is tested above; here every parsed INVITE is a call

    @settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(mutated())
    def send(message: bytes) -> None:
        attacker.send(message)
        time.sleep(0.0005)  # a steady stream, not a flood the kernel drops

    send()
    endpoint = hostile_target.endpoint
    assert endpoint._receiver is not None and endpoint._receiver.is_alive()
    time.sleep(1.0)
    attacker.drain()
    attacker.send(b"OPTIONS sip:1000@127.0.0.1:5162 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5199;branch=z9hG4bKo\r\n"
                  b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: alive\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert attacker.statuses("alive", timeout=5) == [200], "the endpoint stopped answering"
    # Calls the fuzz opened end by themselves (no audio → closing prompt and BYE; no ACK → 32 s).
    assert peers.wait_for(lambda: endpoint.active_calls() == 0, 60), f"{endpoint.active_calls()} calls left open"
    assert peers.wait_for(lambda: not hostile_target._threads, 20), "call threads left running"
    assert not tracebacks(caplog), tracebacks(caplog)[:5]
