"""The media engine on real UDP sockets on 127.0.0.1: legs talking to each other or to a raw RTP peer."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from telephony import g711
from telephony.media import MediaEngine, MediaLeg, PortPoolExhausted
from telephony.recorder import RecordingError, StereoWavRecorder
from tests.telephony.audio_checks import MATCH_THRESHOLD, best_correlation, pcm_samples, read_wav

pytestmark = pytest.mark.timeout(60)

# Distinct non-zero μ-law codes: frame i of a test stream is 160 × CODES[i], so every frame of
# the recording can be traced back to the packet it came from.
CODES = list(range(0x81, 0xF0))
PORTS = iter(range(31000, 39000, 100))


def decoded_level(code: int) -> int:
    return int(pcm_samples(g711.decoder(g711.PCMU)(bytes([code])))[0])


def rtp(seq: int, payload: bytes, payload_type: int = g711.PCMU, ssrc: int = 0x1234, timestamp: int | None = None) -> bytes:
    ts = seq * g711.FRAME_SAMPLES if timestamp is None else timestamp
    return struct.pack("!BBHII", 0x80, payload_type, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


class RawPeer:
    """A bare UDP socket speaking RTP by hand, paced on its own 20 ms clock."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.address = self.sock.getsockname()

    def send_paced(self, leg: MediaLeg, packets: list[bytes | None], interval: float = 0.02) -> float:
        """One entry per interval; None sends nothing in that slot (a pause or a lost packet).

        Returns how late (s) the latest packet left: on a starved machine the pacing itself fails."""
        start, latest = time.monotonic(), 0.0
        for index, packet in enumerate(packets):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            latest = max(latest, -delay)
            if packet is not None:
                self.sock.sendto(packet, ("127.0.0.1", leg.local_port))
        return latest

    def receive(self, count: int) -> list[bytes]:
        return [self.sock.recvfrom(2048)[0] for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def engine() -> Iterator[MediaEngine]:
    first = next(PORTS)
    media = MediaEngine("127.0.0.1", first, first + 99)
    media.start()
    yield media
    media.stop()


@pytest.fixture
def peer() -> Iterator[RawPeer]:
    raw = RawPeer()
    yield raw
    raw.close()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About two seconds of espeak-ng speech (22 kHz WAV)."""
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(wav), "thank you for calling, how can I help"], check=True)
    return wav


@pytest.fixture(scope="module")
def speech(speech_wav: Path) -> bytes:
    """The same speech as 8 kHz 16-bit mono PCM."""
    command = ["sox", str(speech_wav), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed", "-t", "raw", "-"]
    return subprocess.run(command, check=True, capture_output=True).stdout


def record(leg: MediaLeg, path: Path) -> StereoWavRecorder:
    recorder = StereoWavRecorder(path)
    leg.attach_recorder(recorder)
    return recorder


def finish(leg: MediaLeg, recorder: StereoWavRecorder) -> np.ndarray:
    leg.detach_recorder()
    return read_wav(recorder.close().path)[0]


def frame_levels(channel: np.ndarray) -> list[int]:
    """The recording cut into 20 ms frames (they are tick-aligned), each frame's first sample."""
    count = len(channel) // g711.FRAME_SAMPLES
    frames = channel[: count * g711.FRAME_SAMPLES].reshape(count, g711.FRAME_SAMPLES)
    assert (frames == frames[:, :1]).all(), "a frame mixes two packets: tick alignment lost"
    return [int(value) for value in frames[:, 0]]


def trimmed(levels: list[int]) -> list[int]:
    """Frame levels between the first and the last non-silent frame."""
    loud = [index for index, level in enumerate(levels) if level]
    return levels[loud[0]: loud[-1] + 1]


def stream(count: int) -> list[bytes]:
    return [rtp(seq, bytes([CODES[seq]]) * g711.FRAME_SAMPLES) for seq in range(count)]


def expected_levels(seqs: list[int | None]) -> list[int]:
    return [decoded_level(CODES[seq]) if seq is not None else 0 for seq in seqs]


@pytest.mark.parametrize("payload_type", [g711.PCMU, g711.PCMA])
def test_two_legs_exchange_speech_and_recording_matches(engine: MediaEngine, speech: bytes, tmp_path: Path,
                                                        payload_type: int) -> None:
    caller, callee = engine.open_leg(), engine.open_leg()
    caller.connect(("127.0.0.1", callee.local_port), payload_type)
    callee.connect(("127.0.0.1", caller.local_port), payload_type)
    callee_recorder = record(callee, tmp_path / "callee.wav")
    caller_recorder = record(caller, tmp_path / "caller.wav")
    caller.play(speech)
    callee.play(speech[::-1])  # something else, to check the channels do not mix
    assert caller.playing
    assert caller.wait_played(timeout=10)
    time.sleep(0.3)
    heard = finish(callee, callee_recorder)
    sent = finish(caller, caller_recorder)

    source = pcm_samples(speech)
    left, lag = best_correlation(source, heard[:, 0])
    assert left >= MATCH_THRESHOLD and lag <= 0.2, (left, lag)
    right, right_lag = best_correlation(source, sent[:, 1])
    assert right >= MATCH_THRESHOLD and right_lag <= 0.1
    assert best_correlation(source, heard[:, 1])[0] < MATCH_THRESHOLD
    assert callee.stats.lost == 0 and callee.stats.ignored == 0
    assert callee.stats.received >= len(speech) // g711.FRAME_BYTES


def test_lost_packet_becomes_one_silent_frame(engine: MediaEngine, peer: RawPeer, tmp_path: Path) -> None:
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    recorder = record(leg, tmp_path / "loss.wav")
    packets: list[bytes | None] = list(stream(40))
    packets[20] = packets[23] = None  # two losses, each alone (two in a row empty the 40 ms buffer: a pause)
    peer.send_paced(leg, packets)
    time.sleep(0.2)
    levels = trimmed(frame_levels(finish(leg, recorder)[:, 0]))
    assert levels == expected_levels([seq if seq not in (20, 23) else None for seq in range(40)])
    assert leg.stats.lost == 2 and leg.stats.late == 0


def test_reordered_packets_are_put_back_in_order(engine: MediaEngine, peer: RawPeer, tmp_path: Path) -> None:
    """The buffer starts one frame deep (the least delay); the first packet after its turn deepens it for the rest."""
    packets = stream(40)
    for first in range(5, 35, 6):
        packets[first], packets[first + 1] = packets[first + 1], packets[first]
    for attempt in range(3):  # again only when the machine stalled the sender or the clock (not the buffer's doing)
        leg = engine.open_leg()
        leg.connect(peer.address, g711.PCMU)
        recorder = record(leg, tmp_path / f"reorder-{attempt}.wav")
        late_ticks = engine.stats.late_ticks
        sender_late = peer.send_paced(leg, packets)
        time.sleep(0.2)
        played = [level for level in trimmed(frame_levels(finish(leg, recorder)[:, 0])) if level]
        if sender_late < 0.015 and engine.stats.late_ticks == late_ticks:
            break
    assert leg.stats.lost + leg.stats.late <= 2  # the first swap may cost its frame; none after it
    in_order = list(range(40))
    first_late_dropped = [seq for seq in in_order if seq != 5]
    assert played in (expected_levels(in_order), expected_levels(first_late_dropped)), played


def test_pause_in_sending_is_kept_as_silence_in_time(engine: MediaEngine, peer: RawPeer, tmp_path: Path) -> None:
    """A phone that stops sending (silence suppression) for 0.5 s: the recording keeps the gap."""
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    recorder = record(leg, tmp_path / "pause.wav")
    packets: list[bytes | None] = [*stream(20), *[None] * 25]
    packets += [rtp(seq, bytes([CODES[seq]]) * g711.FRAME_SAMPLES) for seq in range(20, 40)]
    peer.send_paced(leg, packets)
    time.sleep(0.2)
    levels = trimmed(frame_levels(finish(leg, recorder)[:, 0]))
    gap = len(levels) - 40
    assert 24 <= gap <= 28, gap  # 25 frames, plus at most the jitter buffer refilling
    assert [level for level in levels if level] == expected_levels(list(range(40)))


def test_stun_rtcp_garbage_and_strangers_are_ignored(engine: MediaEngine, peer: RawPeer, tmp_path: Path) -> None:
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    recorder = record(leg, tmp_path / "noise.wav")
    stranger = RawPeer()
    packets = stream(40)
    peer.send_paced(leg, packets[:10])
    target = ("127.0.0.1", leg.local_port)
    stun_binding_request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, b"transaction1")
    rtcp_receiver_report = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
    for junk in (stun_binding_request, rtcp_receiver_report, b"hello", rtp(500, b"\x00" * 160, payload_type=96)):
        peer.sock.sendto(junk, target)
    stranger.sock.sendto(rtp(11, b"\x00" * 160), target)
    stranger.close()
    peer.send_paced(leg, packets[10:])
    time.sleep(0.2)
    levels = trimmed(frame_levels(finish(leg, recorder)[:, 0]))
    assert levels == expected_levels(list(range(40)))
    assert (leg.stats.ignored_not_rtp, leg.stats.ignored_payload, leg.stats.ignored_source) == (3, 1, 1)
    assert leg.stats.received == 40


def test_silence_is_sent_when_nothing_plays(engine: MediaEngine, peer: RawPeer) -> None:
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    started = time.monotonic()
    packets = peer.receive(25)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed <= 0.7
    assert all(packet[12:] == b"\xff" * 160 for packet in packets)
    sequence = [struct.unpack_from("!H", packet, 2)[0] for packet in packets]
    assert sequence == [(sequence[0] + index) & 0xFFFF for index in range(25)]
    assert packets[0][1] == 0x80 and packets[1][1] == 0  # marker on the first packet only


def test_played_audio_reaches_the_peer_in_order(engine: MediaEngine, peer: RawPeer) -> None:
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMA)
    tone = b"".join(np.full(g711.FRAME_SAMPLES, 1000 * (index + 1), dtype=np.int16).tobytes() for index in range(5))
    leg.play(tone)
    packets = peer.receive(40)
    decode = g711.decoder(g711.PCMA)
    levels = [int(pcm_samples(decode(packet[12:]))[0]) for packet in packets]
    loud = [level for level in levels if abs(level) > 100]  # A-law has no exact zero: silence is ±8
    assert len(loud) == 5 and loud == sorted(loud)
    assert all(packet[1] & 0x7F == g711.PCMA for packet in packets)
    assert not leg.playing and leg.wait_played(0)


def test_stop_playback_empties_the_queue(engine: MediaEngine, peer: RawPeer) -> None:
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    leg.play(bytes(8000 * 2 * 5))
    assert leg.playing and not leg.wait_played(0.1)
    leg.stop_playback()
    assert not leg.playing and leg.wait_played(0)


def test_dtmf_events_are_reported_once_per_digit(engine: MediaEngine, peer: RawPeer) -> None:
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU, dtmf_payload_type=101)
    digits: list[str] = []
    leg.on_dtmf = digits.append
    packets = []
    for digit_index, (event, timestamp) in enumerate(((5, 8000), (11, 16000))):
        for repeat in range(4):
            end = 0x80 if repeat == 3 else 0
            payload = struct.pack("!BBH", event, end | 10, 160 * (repeat + 1))
            packets.append(rtp(digit_index * 4 + repeat, payload, payload_type=101, timestamp=timestamp))
    peer.send_paced(leg, packets)
    deadline = time.monotonic() + 1
    while len(digits) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert digits == ["5", "#"]


def test_bridge_relays_both_ways(engine: MediaEngine, speech: bytes, tmp_path: Path) -> None:
    """customer ↔ [a bridged b] ↔ agent, all four legs in one engine."""
    customer, a, b, agent = (engine.open_leg() for _ in range(4))
    for one, other, payload_type in ((customer, a, g711.PCMU), (b, agent, g711.PCMA)):
        one.connect(("127.0.0.1", other.local_port), payload_type)
        other.connect(("127.0.0.1", one.local_port), payload_type)
    engine.bridge(a, b)
    agent_heard = record(agent, tmp_path / "agent.wav")
    customer_heard = record(customer, tmp_path / "customer.wav")
    answer = speech[len(speech) // 2:] + speech[: len(speech) // 2]
    customer.play(speech)
    agent.play(answer)
    assert customer.wait_played(10) and agent.wait_played(10)
    time.sleep(0.3)
    source = pcm_samples(speech)
    assert best_correlation(source, finish(agent, agent_heard)[:, 0])[0] >= MATCH_THRESHOLD
    assert best_correlation(pcm_samples(answer), finish(customer, customer_heard)[:, 0])[0] >= MATCH_THRESHOLD

    engine.unbridge(a)
    time.sleep(0.1)
    assert a.hears == () and b.hears == ()


def test_ports_come_back_to_the_pool_and_exhaustion_is_clear() -> None:
    engine = MediaEngine("127.0.0.1", 39001, 39006)  # even ports 39002, 39004, 39006
    engine.start()
    try:
        legs = [engine.open_leg() for _ in range(3)]
        assert sorted(leg.local_port for leg in legs) == [39002, 39004, 39006]
        with pytest.raises(PortPoolExhausted, match="39001-39006"):
            engine.open_leg()
        legs[1].close()
        deadline = time.monotonic() + 1
        while engine.free_ports == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        again = engine.open_leg()
        assert again.local_port == 39004
    finally:
        engine.stop()
    assert engine.free_ports == 3
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 39004))  # closed for real
    probe.close()


def test_ports_taken_by_another_program_are_skipped() -> None:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", 39010))
    engine = MediaEngine("127.0.0.1", 39010, 39013)
    try:
        assert engine.open_leg().local_port == 39012
        with pytest.raises(PortPoolExhausted):
            engine.open_leg()
    finally:
        engine.stop()
        squatter.close()


def test_packets_of_other_lengths_are_cut_into_frames(engine: MediaEngine, peer: RawPeer, tmp_path: Path) -> None:
    """30 ms packets (240 samples): frames straddling two packets are assembled sample by sample."""
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    recorder = record(leg, tmp_path / "ptime30.wav")
    pcm_codes = [CODES[index // 160] for index in range(40 * 160)]  # sample-wise the same 40 frames as stream(40)
    packets = [rtp(number, bytes(pcm_codes[number * 240: (number + 1) * 240]), timestamp=number * 240)
               for number in range(len(pcm_codes) // 240)]
    peer.send_paced(leg, packets, interval=0.03)
    time.sleep(0.3)
    levels = trimmed(frame_levels(finish(leg, recorder)[:, 0]))
    assert levels[:39] == expected_levels(list(range(39)))


def test_real_rtp_sender_ffmpeg_is_recorded(engine: MediaEngine, speech: bytes, speech_wav: Path, tmp_path: Path) -> None:
    """ffmpeg's own RTP stack: 90 ms packets from a port of its choosing, RTCP sender reports."""
    leg = engine.open_leg()
    leg.connect(("127.0.0.1", 9), g711.PCMU)  # the SDP would name another port: the first packet latches
    recorder = record(leg, tmp_path / "from-ffmpeg.wav")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-re", "-i", str(speech_wav), "-ar", "8000", "-ac", "1",
                    "-acodec", "pcm_mulaw", "-f", "rtp", f"rtp://127.0.0.1:{leg.local_port}"],
                   check=True, timeout=30, stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    correlation, _ = best_correlation(pcm_samples(speech), finish(leg, recorder)[:, 0])
    assert correlation >= MATCH_THRESHOLD
    assert leg.stats.received > 0 and leg.stats.lost == 0 and leg.stats.ignored_payload == 0


def test_real_rtp_receiver_ffmpeg_hears_what_a_leg_plays(engine: MediaEngine, speech: bytes, tmp_path: Path) -> None:
    port = 38950
    sdp = tmp_path / "hotline.sdp"
    sdp.write_text(f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=hotline\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                   f"m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")
    heard = tmp_path / "heard.wav"
    ffmpeg = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file,udp,rtp",
                               "-i", str(sdp), "-ar", "8000", "-ac", "1", str(heard)], stdout=subprocess.DEVNULL)
    try:
        leg = engine.open_leg()
        leg.connect(("127.0.0.1", port), g711.PCMA)
        time.sleep(1.0)  # ffmpeg listening
        leg.play(speech)
        assert leg.wait_played(10)
        time.sleep(0.5)
    finally:
        ffmpeg.send_signal(signal.SIGINT)
        ffmpeg.wait(10)
    correlation, _ = best_correlation(pcm_samples(speech), read_wav(heard)[0][:, 0])
    assert correlation >= MATCH_THRESHOLD


def test_latches_to_the_first_source_and_answers_there(engine: MediaEngine, peer: RawPeer, tmp_path: Path) -> None:
    """A phone behind NAT sends from another port than its SDP names: we send back where RTP comes from."""
    leg = engine.open_leg()
    leg.connect(("127.0.0.1", 9), g711.PCMU)
    peer.send_paced(leg, stream(5))
    packets = peer.receive(10)
    assert all(packet[12:] == b"\xff" * 160 for packet in packets)
    assert leg.stats.received == 5 and leg.stats.ignored == 0


def test_a_restarted_stream_is_followed(engine: MediaEngine, peer: RawPeer, tmp_path: Path) -> None:
    """New SSRC and timestamps far away (a re-INVITE, a phone's restart): the recording continues."""
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    recorder = record(leg, tmp_path / "restart.wav")
    first = stream(20)
    second = [rtp(seq, bytes([CODES[seq]]) * g711.FRAME_SAMPLES, ssrc=0x9999, timestamp=0x7FFF0000 + seq * 160)
              for seq in range(20, 40)]
    peer.send_paced(leg, [*first, *second])
    time.sleep(0.2)
    levels = [level for level in frame_levels(finish(leg, recorder)[:, 0]) if level]
    assert levels == expected_levels(list(range(40)))


class BrokenDisk:
    def __init__(self) -> None:
        self.writes = 0

    def write(self, left: bytes, right: bytes) -> None:
        self.writes += 1
        if self.writes == 10:
            raise RecordingError("cannot write recording /nowhere.wav: No space left on device")


def test_a_failing_recorder_is_reported_once_and_the_call_goes_on(engine: MediaEngine, peer: RawPeer) -> None:
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    errors: list[Exception] = []
    leg.on_recorder_error = errors.append
    broken = BrokenDisk()
    leg.attach_recorder(broken)
    peer.receive(30)
    assert broken.writes == 10 and len(errors) == 1 and "No space left" in str(errors[0])
    assert leg.recorder_error is errors[0] and leg.detach_recorder() is None


def tone(level: int, seconds: float) -> bytes:
    return np.full(int(seconds * g711.SAMPLE_RATE), level, dtype=np.int16).tobytes()


def through_pcmu(level: int) -> int:
    """A PCM level as a leg receives it from a phone sending PCMU."""
    return int(pcm_samples(g711.decoder(g711.PCMU)(g711.encoder(g711.PCMU)(tone(level, 0.02))))[0])


def phone_line(engine: MediaEngine) -> tuple[MediaLeg, MediaLeg]:
    """Hotline's leg of one party and the party's phone (a leg of the same engine), connected."""
    leg, phone = engine.open_leg(), engine.open_leg()
    leg.connect(("127.0.0.1", phone.local_port), g711.PCMU)
    phone.connect(("127.0.0.1", leg.local_port), g711.PCMU)
    return leg, phone


PARTY_LEVELS = {"customer": 1000, "agent": 2000, "supervisor": 4000}


@pytest.mark.parametrize("hearing", [
    pytest.param({"customer": ["agent"], "agent": ["customer"], "supervisor": ["customer", "agent"]}, id="listen"),
    pytest.param({"customer": ["agent"], "agent": ["customer", "supervisor"], "supervisor": ["customer", "agent"]},
                 id="whisper"),
    pytest.param({"customer": [], "agent": ["supervisor"], "supervisor": ["agent"]}, id="consult"),
])
def test_each_leg_sends_the_sum_of_whom_it_hears(engine: MediaEngine, tmp_path: Path,
                                                 hearing: dict[str, list[str]]) -> None:
    """Three parties, each phone sending its own level: a leg's sent frames hold exactly its sources' sum."""
    lines = {party: phone_line(engine) for party in PARTY_LEVELS}
    legs = {party: leg for party, (leg, _) in lines.items()}
    for party, sources in hearing.items():
        engine.set_hears(legs[party], [legs[source] for source in sources])
    recorders = {party: record(leg, tmp_path / f"{party}.wav") for party, leg in legs.items()}
    for party, (_, phone) in lines.items():
        phone.play(tone(PARTY_LEVELS[party], 1.0))
    assert all(phone.wait_played(10) for _, phone in lines.values())
    time.sleep(0.2)

    for party, leg in legs.items():
        sent = frame_levels(finish(leg, recorders[party])[:, 1])
        heard = [through_pcmu(PARTY_LEVELS[source]) for source in hearing[party]]
        assert set(sent) <= {sum(subset) for subset in subsets(heard)}, (party, set(sent))
        assert sent.count(sum(heard)) >= 40, (party, sent)  # 50 frames played


def subsets(levels: list[int]) -> list[list[int]]:
    """Every subset of the sources' levels: the phones start and stop a tick or two apart."""
    result: list[list[int]] = [[]]
    for level in levels:
        result += [[*subset, level] for subset in result]
    return result


def test_hearing_is_one_way_and_closing_a_leg_removes_it_everywhere(engine: MediaEngine) -> None:
    customer, agent, supervisor = (engine.open_leg() for _ in range(3))
    engine.bridge(customer, agent)
    engine.set_hears(supervisor, [customer, agent, customer])
    assert supervisor.hears == (customer, agent)  # a leg is heard once
    assert customer.hears == (agent,) and agent.hears == (customer,)

    customer.close()
    assert supervisor.hears == (agent,) and agent.hears == () and customer.hears == ()
    engine.unbridge(agent)
    assert supervisor.hears == () and agent.hears == ()


def test_hearing_bad_legs_is_refused_and_changes_nothing(engine: MediaEngine) -> None:
    customer, agent, gone = (engine.open_leg() for _ in range(3))
    engine.bridge(customer, agent)
    gone.close()
    other = MediaEngine("127.0.0.1", 38900, 38909)
    stranger = other.open_leg()
    try:
        for sources, reason in (([agent, customer], "cannot hear itself"), ([gone], "is closed"),
                                ([stranger], "another media engine")):
            with pytest.raises(ValueError, match=reason):
                engine.set_hears(customer, sources)
            assert customer.hears == (agent,) and agent.hears == (customer,)
    finally:
        other.stop()


def test_loop_has_no_gap_at_the_seam_and_prompts_play_over_it_ducked(engine: MediaEngine, peer: RawPeer,
                                                                      tmp_path: Path) -> None:
    """Hold music of 333 samples (not a whole number of frames) and a prompt over it."""
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    recorder = record(leg, tmp_path / "hold.wav")
    music = np.arange(1, 334, dtype=np.int16)
    leg.loop(music.tobytes())
    time.sleep(0.5)
    assert not leg.playing and leg.wait_played(0)  # the loop is not a prompt
    prompt_level = 8000
    leg.play(tone(prompt_level, 0.2))
    assert leg.playing and leg.wait_played(2)
    time.sleep(0.3)
    leg.stop_loop()
    time.sleep(0.2)
    sent = finish(leg, recorder)[:, 1].astype(np.int32)

    first = int(np.flatnonzero(sent)[0])
    last = int(np.flatnonzero(sent)[-1])
    looped = sent[first: last + 1]
    assert first % g711.FRAME_SAMPLES == 0 and len(looped) % g711.FRAME_SAMPLES == 0
    phase = np.arange(len(looped)) % len(music)
    under_prompt = looped >= prompt_level
    ducked = np.frombuffer(g711.attenuated(music.tobytes(), 12), dtype=np.int16).astype(np.int32)
    expected = np.where(under_prompt, prompt_level + ducked[phase], music[phase])
    assert (looped == expected).all()
    assert under_prompt.sum() == 10 * g711.FRAME_SAMPLES  # the whole prompt, over the loop
    assert ducked.max() == pytest.approx(music.max() / 4, rel=0.01)  # 12 dB down
    assert not sent[last + 1:].any()  # stop_loop: silence again


@pytest.mark.parametrize("pcm", [b"", b"\x01\x02\x03"])
def test_loop_of_no_whole_samples_is_refused(engine: MediaEngine, pcm: bytes) -> None:
    leg = engine.open_leg()
    with pytest.raises(ValueError, match="16-bit samples"):
        leg.loop(pcm)


def test_time_the_clock_skips_is_recorded_as_silence_and_counted(engine: MediaEngine, peer: RawPeer,
                                                                 tmp_path: Path) -> None:
    """Two stalls of the media thread (a slow callback): the WAV still lasts as long as the call."""
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU, dtmf_payload_type=101)
    stalls = {"1": 1.3, "2": 2.0}
    leg.on_dtmf = lambda digit: time.sleep(stalls[digit])
    leg.play(tone(3000, 8.0))
    attached = time.monotonic()
    recorder = record(leg, tmp_path / "stalled.wav")
    for number, (event, at) in enumerate(((1, 0.5), (2, 2.5))):
        time.sleep(max(0.0, attached + at - time.monotonic()))
        dtmf_end = struct.pack("!BBH", event, 0x80 | 10, 800)
        packet = rtp(number, dtmf_end, payload_type=101, timestamp=8000 * (number + 1))
        peer.sock.sendto(packet, ("127.0.0.1", leg.local_port))
    time.sleep(max(0.0, attached + 5.5 - time.monotonic()))
    leg.detach_recorder()
    wall_clock = time.monotonic() - attached
    result = recorder.close()

    assert result.duration == pytest.approx(wall_clock, abs=0.1)
    assert leg.gap_seconds == pytest.approx(sum(stalls.values()), abs=0.1)
    assert leg.longest_gap_seconds == pytest.approx(max(stalls.values()), abs=0.1)
    assert engine.stats.skipped_ticks == leg.stats.gap_frames
    sent = frame_levels(read_wav(result.path)[0][:, 1])
    silent_runs = [len(run) for run in "".join("0" if level == 0 else "1" for level in sent).split("1") if run]
    assert sum(silent_runs) == leg.stats.gap_frames and max(silent_runs) == leg.stats.longest_gap_frames


@pytest.mark.parametrize("remote, reason", [
    (("127.0.0.1", 70000), "port 70000 is outside 1-65535"),
    (("127.0.0.1", 0), "port 0 is outside"),
    (("127.0.0.1", -5), "port -5 is outside"),
    (("127.0.0.1", "5004"), "port '5004' is outside"),
    (("pbx.example.com", 5004), "not an \\(IPv4 address, port\\) pair"),
    (("::1", 5004), "not an \\(IPv4 address, port\\) pair"),
    (("0.0.0.0", 5004), "0.0.0.0 is not a destination"),
    (None, "not an \\(IPv4 address, port\\) pair"),
])
def test_connect_refuses_an_rtp_destination_it_cannot_send_to(engine: MediaEngine, peer: RawPeer,
                                                               remote: object, reason: str) -> None:
    leg = engine.open_leg()
    leg.connect(peer.address, g711.PCMU)
    with pytest.raises(ValueError, match=reason):
        leg.connect(remote, g711.PCMU)  # type: ignore[arg-type]
    assert len(peer.receive(5)) == 5 and leg.stats.send_errors == 0  # the previous connection goes on


@pytest.mark.parametrize("dtmf_payload_type", [128, -1, g711.PCMU])
def test_connect_refuses_a_dtmf_payload_type_out_of_range(engine: MediaEngine, peer: RawPeer,
                                                          dtmf_payload_type: int) -> None:
    leg = engine.open_leg()
    with pytest.raises(ValueError, match="DTMF payload type"):
        leg.connect(peer.address, g711.PCMU, dtmf_payload_type=dtmf_payload_type)


def test_send_errors_are_counted_and_logged_once_per_kind(engine: MediaEngine,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """From a socket on 127.0.0.1, TEST-NET-1 is EINVAL and broadcast EACCES, at every tick."""
    leg = engine.open_leg()
    with caplog.at_level("WARNING", logger="telephony.media"):
        leg.connect(("192.0.2.1", 4000), g711.PCMU)
        time.sleep(0.3)
        leg.connect(("255.255.255.255", 4000), g711.PCMU)
        time.sleep(0.3)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2, warnings
    assert "OSError" in warnings[0] and "PermissionError" in warnings[1]
    assert leg.stats.send_errors >= 20 and leg.stats.sent == 0
