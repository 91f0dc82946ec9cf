"""The SIP endpoint against real peers: Kamailio (registrar/proxy), sipp and baresip.

Each test names the pyVoIP 1.6.8 defect it guards against (shared/sip-notes.md).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import Settings
from telephony import sip
from telephony.pbx import LocalPbx, hotline_extensions
from tests.telephony import peers
from tests.telephony.conftest import run_sipp

pytestmark = pytest.mark.sip

ANSWER_PORT = 40000


@pytest.fixture
def endpoint(sip_settings: Settings) -> Iterator[sip.Endpoint]:
    """Our endpoint registering 1000 at the test PBX; answers every call at once on ANSWER_PORT."""
    ep = sip.Endpoint(local_ip=peers.HOST, local_port=peers.HOTLINE_PORT, pbx_host=peers.HOST,
                      pbx_port=peers.PBX_PORT, retry_interval=1.0, keepalive=0.5)
    ep.add_account("1000", sip_settings.sip.hotline_password)
    ep.calls_seen = []  # type: ignore[attr-defined]

    def answer(call: sip.Dialog) -> None:
        ep.calls_seen.append(call)  # type: ignore[attr-defined]
        if call.state is sip.DialogState.RINGING:
            call.answer(ANSWER_PORT)

    ep.on_invite = answer
    yield ep
    ep.stop()


@pytest.fixture
def registered(pbx: LocalPbx, endpoint: sip.Endpoint) -> sip.Endpoint:
    endpoint.start()
    assert endpoint.wait_registered(3), endpoint.accounts["1000"].last_error
    return endpoint


def test_caller_bye_ends_the_call_and_an_empty_supported_header_is_fine(
        registered: sip.Endpoint, sipp_dir: Path) -> None:
    # pyVoIP dropped INVITEs with an empty "Supported:" header (the caller got 408).
    logs = run_sipp("uac_bye", sipp_dir)
    assert f"answer {ANSWER_PORT}" in logs
    [call] = registered.calls_seen  # type: ignore[attr-defined]
    assert call.ended.wait(2) and call.end_reason is sip.EndReason.REMOTE_BYE
    assert call.caller == "13700137000" and call.callee == "1000"
    assert call.codec == sip.Codec(0, "PCMU", 101)


def test_linphone_offer_is_answered_with_pcmu_and_telephone_event_8000(
        registered: sip.Endpoint, sipp_dir: Path) -> None:
    # Linphone offers opus and speex first, PCMU without rtpmap, telephone-event at three rates.
    run_sipp("uac_linphone_offer", sipp_dir)
    [call] = registered.calls_seen  # type: ignore[attr-defined]
    assert call.codec == sip.Codec(0, "PCMU", 100)


def test_pcma_only_offer_is_answered_with_pcma(registered: sip.Endpoint, sipp_dir: Path) -> None:
    run_sipp("uac_pcma", sipp_dir)
    [call] = registered.calls_seen  # type: ignore[attr-defined]
    assert call.codec == sip.Codec(8, "PCMA", 101)


def test_offer_without_g711_gets_488(registered: sip.Endpoint, sipp_dir: Path) -> None:
    run_sipp("uac_unsupported", sipp_dir)
    [call] = registered.calls_seen  # type: ignore[attr-defined]
    assert call.end_reason is sip.EndReason.REJECTED


def test_cancel_before_the_answer(registered: sip.Endpoint, sipp_dir: Path) -> None:
    registered.on_invite = registered.calls_seen.append  # type: ignore[attr-defined]  (never answers)
    run_sipp("uac_cancel", sipp_dir)
    [call] = registered.calls_seen  # type: ignore[attr-defined]
    assert call.ended.wait(2) and call.end_reason is sip.EndReason.CANCELLED


def test_our_bye_gets_its_200_back(registered: sip.Endpoint, sipp_dir: Path) -> None:
    # pyVoIP's BYE copied the INVITE's Via headers: the 200 OK went to the caller's address.
    peer = peers.sipp("uac_wait_bye", sipp_dir)
    try:
        assert peers.wait_for(lambda: registered.calls_seen, 10)  # type: ignore[attr-defined]
        [call] = registered.calls_seen  # type: ignore[attr-defined]
        assert call.confirmed.wait(5), "no ACK for our 200 OK"
        time.sleep(1.0)
        call.hangup()
        assert peers.wait_for(lambda: call.bye_status != 0, 10)
        assert call.bye_status == 200 and call.end_reason is sip.EndReason.LOCAL_BYE
        assert peer.wait(10) == 0, peer.output()[-2000:]
    finally:
        peer.stop()


def test_reinvite_is_answered_with_the_same_sdp_and_no_new_threads(
        registered: sip.Endpoint, sipp_dir: Path) -> None:
    # pyVoIP restarted RTP on a re-INVITE and left the old threads running.
    moved: list[int] = []
    answer = registered.on_invite

    def answer_and_watch(call: sip.Dialog) -> None:
        call.on_media = lambda c: moved.append(c.remote_media.port)  # type: ignore[union-attr]
        answer(call)  # type: ignore[misc]

    registered.on_invite = answer_and_watch
    threads = threading.active_count()
    logs = run_sipp("uac_reinvite", sipp_dir, pause_ms=1000)
    assert f"answer {ANSWER_PORT}" in logs and f"reanswer {ANSWER_PORT}" in logs
    assert moved == [peers.SIPP_MEDIA_PORT + 2]
    assert threading.active_count() <= threads
    [call] = registered.calls_seen  # type: ignore[attr-defined]
    assert call.end_reason is sip.EndReason.REMOTE_BYE


def test_garbage_datagrams_do_not_stop_the_endpoint(registered: sip.Endpoint, sipp_dir: Path) -> None:
    junk = [b"\x00\xff" * 50, b"hello", b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n",
            b"OPTIONS sip:x SIP/2.0\r\nCSeq: banana\r\n\r\n", "NOTIFY sip:é SIP/2.0\r\n".encode("latin-1"),
            b"INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:1000@c>\r\nCall-ID: junk\r\nCSeq: 1 INVITE\r\n"
            b"Content-Type: application/sdp\r\n\r\nm=audio x RTP/AVP\r\nc=IN\r\n"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in junk * 3:
            sock.sendto(datagram, (peers.HOST, peers.HOTLINE_PORT))
    time.sleep(0.3)
    logs = run_sipp("uac_bye", sipp_dir)
    assert f"answer {ANSWER_PORT}" in logs


def test_start_without_a_registrar_returns_at_once_and_registers_later(
        sip_settings: Settings, endpoint: sip.Endpoint) -> None:
    # pyVoIP's start() blocked 30 s without a registrar and never retried: here the endpoint
    # serves requests before any registration answered, and registers once a PBX appears.
    endpoint.start()
    assert not endpoint.accounts["1000"].registered
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((peers.HOST, 0))
    probe.settimeout(5)
    probe.sendto(OPTIONS.encode(), (peers.HOST, peers.HOTLINE_PORT))
    answer, _ = probe.recvfrom(65535)
    probe.close()
    assert answer.startswith(b"SIP/2.0 200") and not endpoint.accounts["1000"].registered
    assert not endpoint.wait_registered(1.0)
    server = LocalPbx.from_settings(sip_settings)
    server.start(hotline_extensions(sip_settings))
    try:
        assert endpoint.wait_registered(35), endpoint.accounts["1000"].last_error
    finally:
        server.stop()


OPTIONS = ("OPTIONS sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe;rport\r\n"
           "From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\n\r\n")


def test_pbx_restart_is_noticed_and_the_number_registers_again(
        registered: sip.Endpoint, pbx: LocalPbx, sip_settings: Settings, sipp_dir: Path) -> None:
    account = registered.accounts["1000"]
    time.sleep(1.0)  # a keep-alive has seen this boot
    boot, granted_before = registered.pbx_server, account.expires_at
    assert pbx.reload(pbx.extensions + [("2001", "0" * 32)])  # a new user: restart, registrations lost
    # A registration granted by the new boot, not the one we had before the restart.
    assert peers.wait_for(lambda: registered.pbx_server != boot and account.expires_at > granted_before, 5), \
        "did not register again"
    logs = run_sipp("uac_bye", sipp_dir)  # the restarted PBX routes the hotline number to us again
    assert f"answer {ANSWER_PORT}" in logs


def test_wrong_password_is_reported_and_retried(pbx: LocalPbx, sip_settings: Settings) -> None:
    seen: list[str] = []
    ep = sip.Endpoint(local_ip=peers.HOST, local_port=peers.HOTLINE_PORT, pbx_host=peers.HOST,
                      pbx_port=peers.PBX_PORT, retry_interval=0.5, on_registration=lambda a: seen.append(a.last_error))
    ep.add_account("1000", "wrong")
    ep.start()
    try:
        assert not ep.wait_registered(2)
        assert len(seen) >= 2 and seen[0].startswith("401")
    finally:
        ep.stop()


def test_call_ids_are_unique_across_processes(sip_settings: Settings) -> None:
    # pyVoIP derived Call-IDs from a per-process counter: every run of the program repeated them.
    program = (
        "from telephony import sip\n"
        f"ep = sip.Endpoint(local_ip='{peers.HOST}', local_port={peers.HOTLINE_PORT}, pbx_host='{peers.HOST}', "
        f"pbx_port={peers.PBX_PORT}, keepalive=0)\n"
        "ep.add_account('1000', 'x')\n"
        "ep.start()\n"
        f"print(ep.accounts['1000'].call_id, ep.dial('2000', {ANSWER_PORT}).call_id)\n"
        "ep.stop(unregister=False)\n"
    )
    ids: list[str] = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr[-2000:]
        ids += run.stdout.split()
    assert len(ids) == 4 and len(set(ids)) == 4, ids


def test_sdp_parsing_keeps_the_offer_order() -> None:
    offer = sip.parse_sdp(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 96 8 0 101\r\n"
                          b"a=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n")
    assert offer is not None and (offer.address, offer.port) == ("10.0.0.1", 4000)
    assert sip.choose_codec(offer) == sip.Codec(8, "PCMA", 101)
    answer = sip.build_sdp("127.0.0.1", 20000, [sip.Codec(8, "PCMA", 101)], 1).decode()
    assert re.search(r"^m=audio 20000 RTP/AVP 8 101\r$", answer, re.M)


def dial_baresip(endpoint: sip.Endpoint, tmp_path: Path, speech: Path, hold_seconds: float) -> Path:
    """Dial baresip (extension 2000), play ``speech`` to it, hold, hang up; returns its workdir."""
    from telephony.media import MediaEngine

    callee_dir = tmp_path / "callee"
    long_source = peers.speech_wav("Thank you for waiting.", tmp_path / "callee.wav",
                                   pad_seconds=hold_seconds + 30)  # its end would hang up
    callee = peers.baresip_callee(callee_dir, long_source)
    media = MediaEngine(peers.HOST, *peers.HOTLINE_RTP)
    media.start()
    try:
        assert peers.wait_for(lambda: "registered successfully" in callee.output().lower()
                              or "200 ok" in callee.output().lower(), 10), callee.output()[-2000:]
        leg = media.open_leg()
        call = endpoint.dial("2000", leg.local_port)
        assert call.wait_answered(10), f"status {call.status}: {callee.output()[-2000:]}"
        assert call.remote_media is not None and call.codec is not None
        leg.connect((call.remote_media.address, call.remote_media.port), call.codec.payload_type)
        leg.play(read_pcm(speech))
        # pyVoIP's ACK had a fresh To-tag: baresip never matched it and hung up after ~32 s.
        assert not call.ended.wait(hold_seconds), f"the far end hung up: {call.end_reason}"
        call.hangup()
        assert peers.wait_for(lambda: call.bye_status != 0, 10) and call.bye_status == 200
        leg.close()
    finally:
        media.stop()
        callee.stop()
    return callee_dir


def read_pcm(path: Path) -> bytes:
    from tests.telephony.audio_checks import read_wav

    return read_wav(path)[0][:, 0].tobytes()


def test_dial_out_reaches_baresip_with_our_audio(registered: sip.Endpoint, tmp_path: Path,
                                                 caller_speech: Path) -> None:
    from tests.telephony.audio_checks import MATCH_THRESHOLD, best_correlation, read_wav

    callee_dir = dial_baresip(registered, tmp_path, caller_speech, hold_seconds=8)
    [heard] = callee_dir.glob("dump-*-dec.wav")
    correlation, _ = best_correlation(read_wav(caller_speech)[0][:, 0], read_wav(heard)[0][:, 0])
    assert correlation >= MATCH_THRESHOLD, correlation


def test_registration_is_refreshed_before_it_expires(pbx: LocalPbx, sip_settings: Settings) -> None:
    ep = sip.Endpoint(local_ip=peers.HOST, local_port=peers.HOTLINE_PORT, pbx_host=peers.HOST,
                      pbx_port=peers.PBX_PORT, expires=10, keepalive=0)
    account = ep.add_account("1000", sip_settings.sip.hotline_password)
    ep.start()
    try:
        assert ep.wait_registered(3)
        first_expiry = account.expires_at
        assert peers.wait_for(lambda: account.expires_at > first_expiry + 4, 8), "not refreshed at half-time"
        assert account.registered
    finally:
        ep.stop()
