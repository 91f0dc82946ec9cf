"""RTP media for every call of the process, driven by one thread on one 20 ms clock.

Stock pyVoIP runs three threads per call, each polling every 10 ms, and stops being clean
near 100 calls on two cores. Here a single thread sleeps until the next 20 ms tick, then
reads every socket that has data (one non-blocking ``select``), and for each leg plays one
frame out of its jitter buffer, sends one frame and hands both to the leg's recorder.

Each leg has a small jitter buffer ordered by RTP timestamp: a lost packet becomes
silence of one frame (never pyVoIP's full-scale 0x00 click) and the recording stays aligned
with the wall clock. When the thread itself falls more than ``CATCH_UP_LIMIT`` behind, the
skipped ticks are written to the recordings as silence and counted as the leg's gaps, so a
recording always lasts as long as the call. Only RTP version 2 from the latched peer with a
negotiated payload type is used; STUN, RTCP and stray packets are counted and dropped.

A leg always sends (Linphone hangs up after 30 s without incoming RTP): the sum of what the
legs it hears received this tick (``MediaEngine.set_hears``; ``bridge`` is two of those), the
queued prompt mixed over it, and the leg's loop (hold music) under both; G.711 silence when
there is nothing. With one leg heard and no prompt or loop, its frame is passed through as is.

Callbacks (``on_dtmf``, ``on_recorder_error``) run on the media thread: keep them short.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from telephony import g711
from telephony.recorder import RecordingError

log = logging.getLogger(__name__)

TICK_SECONDS = g711.FRAME_MS / 1000
RTP_HEADER = struct.Struct("!BBHII")
RTP_VERSION_2 = 0x80
MARKER = 0x80
RTCP_PAYLOAD_TYPES = range(72, 77)  # RTCP packet types 200-204 seen through the RTP header
# Playout starts once this many 20 ms frames are buffered: one at first (bench/bridged.py through a
# bridge: 3 frames added ~50 ms, 2 ~37 ms, 1 ~7 ms), one more each time a packet comes after its turn.
JITTER_FRAMES = 1
JITTER_MAX_FRAMES = 4
LONG_PACKET_MARGIN_FRAMES = 2
LOSS_MAX_FRAMES = 3  # a stream that resumes after at most this many missing frames lost them; more: it paused
JITTER_SLACK_FRAMES = 7  # 140 ms more (sender clock faster, a burst) and the oldest are dropped
RESYNC_FRAMES = 100  # a timestamp jump of more than 2 s: a long pause or a restarted stream
CATCH_UP_LIMIT = 1.0  # seconds behind after which ticks are skipped rather than replayed
DTMF_EVENTS = "0123456789*#ABCD"
RECEIVE_BURST = 16  # datagrams read per socket and tick before moving on
LOOP_DUCKING_DB = 12  # hold music under a prompt or under the people a leg hears
SEND_ERRORS = (OSError, OverflowError, TypeError, ValueError)  # what sendto raises for a bad destination


class PortPoolExhausted(RuntimeError):
    """Every RTP port of the configured range is in use."""


class Recorder(Protocol):
    def write(self, left: bytes, right: bytes) -> None: ...


@dataclass
class LegStats:
    """Counters of one leg: ``lost``, ``late``, ``dropped`` and ``underruns`` count 20 ms frames, the rest packets.

    lost: a frame missing while later ones had arrived (played as silence); late: arrived after
    its turn, or a duplicate; dropped: the buffer overflowed; underruns: nothing was buffered
    (the sender paused or stopped); ignored_*: not RTP (STUN, RTCP, garbage), from a source
    other than the latched peer, or of a payload type not negotiated; send_errors: packets
    the socket refused. gap_frames: frames the engine's own clock skipped (it fell more than
    ``CATCH_UP_LIMIT`` behind), written to the recording as silence; longest_gap_frames: the
    longest such stretch. Packets the far end did not send are lost frames, not gaps.
    """

    received: int = 0
    sent: int = 0
    lost: int = 0
    late: int = 0
    dropped: int = 0
    underruns: int = 0
    ignored_not_rtp: int = 0
    ignored_source: int = 0
    ignored_payload: int = 0
    send_errors: int = 0
    gap_frames: int = 0
    longest_gap_frames: int = 0

    @property
    def ignored(self) -> int:
        return self.ignored_not_rtp + self.ignored_source + self.ignored_payload


@dataclass
class EngineStats:
    """How well the 20 ms clock kept time; ``max_lateness`` in seconds."""

    ticks: int = 0
    max_lateness: float = 0.0
    late_ticks: int = 0  # ticks run more than one frame after their time
    skipped_ticks: int = 0


class JitterBuffer:
    """20 ms frames indexed by RTP timestamp (samples since the stream's base / 160).

    Indexing by timestamp rather than sequence number keeps a sender's pauses (silence
    suppression) at their true length and accepts any packet time: a 30 or 90 ms packet is
    cut into frames, and frames straddled by packets are assembled sample by sample.
    """

    def __init__(self, stats: LegStats) -> None:
        self._stats = stats
        self._depth = JITTER_FRAMES
        self._frames: dict[int, bytes | bytearray] = {}
        self._next: int | None = None
        self._playing = False
        self._stalled_at: int | None = None  # the frame the buffer ran dry at
        self.end = 0  # one past the highest frame index received


    def put(self, index: int, frame: bytes) -> None:
        """A whole frame (the usual 20 ms packet on a frame boundary)."""
        if not self._admit(index):
            return
        if index >= self.end:
            self.end = index + 1
        if index in self._frames:
            self._stats.late += 1  # a duplicate
            return
        self._frames[index] = frame
        if len(self._frames) > self._depth + JITTER_SLACK_FRAMES:
            self._drop_oldest()

    def put_samples(self, offset: int, pcm: bytes) -> None:
        """PCM starting ``offset`` samples into the stream, of any length and alignment."""
        self._fit_depth(len(pcm))
        position = 0
        while position < len(pcm):
            index, start = divmod(offset + position // g711.SAMPLE_WIDTH, g711.FRAME_SAMPLES)
            start *= g711.SAMPLE_WIDTH
            piece = pcm[position: position + g711.FRAME_BYTES - start]
            position += len(piece)
            if not self._admit(index):
                continue
            self.end = max(self.end, index + 1)
            frame = self._frames.get(index)
            if not isinstance(frame, bytearray):
                frame = self._frames[index] = bytearray(frame or g711.SILENCE_FRAME)
            frame[start: start + len(piece)] = piece
        if len(self._frames) > self._depth + JITTER_SLACK_FRAMES:
            self._drop_oldest()

    def fill_silence(self, first: int, last: int) -> None:
        """Mark frames as silent on purpose (a DTMF event replaces them), so they are not counted lost."""
        if self._next is None:
            return
        for index in range(max(first, self._next), last + 1):
            self._frames.setdefault(index, g711.SILENCE_FRAME)
        if len(self._frames) > self._depth + JITTER_SLACK_FRAMES:
            self._drop_oldest()

    def pop(self) -> bytes | bytearray | None:
        """The frame for this tick, or None for silence (not started, lost, or nothing received)."""
        if not self._playing:
            if len(self._frames) < self._depth or not self._resume(min(self._frames)):
                return None
        frame = self._frames.pop(self._next, None)
        if frame is None:
            if not self._frames:  # nothing more yet: a loss or a pause, told apart when the stream resumes
                self._playing = False
                self._stalled_at = self._next
                return None
            self._stats.lost += 1
        self._next += 1
        return frame

    def _resume(self, first: int) -> bool:
        """Play from ``first`` — True — or, when the frame the buffer ran dry at came after its tick, deepen first.

        After a stall, a short gap was lost packets, a longer one the sender's pause.
        """
        if self._stalled_at is not None:
            gap, self._stalled_at = first - self._stalled_at, None
            if gap == 0:  # late, not lost: this sender's packets need a deeper buffer
                self._stats.underruns += 1
                self._deepen()
                if len(self._frames) < self._depth:
                    return False
            elif gap <= LOSS_MAX_FRAMES:
                self._stats.lost += gap
            else:
                self._stats.underruns += 1
        self._playing = True
        self._next = first
        return True

    def _fit_depth(self, packet_bytes: int) -> None:
        """Long packets (ffmpeg sends 90 ms) need a deeper buffer: a whole packet plus the usual margin."""
        frames_per_packet = -(-packet_bytes // g711.FRAME_BYTES)
        if packet_bytes != g711.FRAME_BYTES:  # frames straddle packets: wait for the next one as well
            self._depth = max(self._depth, frames_per_packet + LONG_PACKET_MARGIN_FRAMES)

    def _admit(self, index: int) -> bool:
        """False for a frame whose turn has passed."""
        if self._next is None:
            self._next = index
        if index < self._next:
            if self._playing:
                self._stats.late += 1
                self._deepen()
                return False
            self._next = index  # reordered before playout started: start earlier
        return True

    def _deepen(self) -> None:
        """This sender's packets come later than the buffer waits for them: wait one frame longer from now on."""
        if self._depth < JITTER_MAX_FRAMES:
            self._depth += 1
            self._playing = False  # gather the extra frame before playing on

    def _drop_oldest(self) -> None:
        while len(self._frames) > self._depth:
            oldest = min(self._frames)
            del self._frames[oldest]
            self._next = oldest + 1
            self._stats.dropped += 1


class Loop:
    """Background audio repeated end to end; frames are cut across the seam, so it has no gap there."""

    def __init__(self, pcm: bytes) -> None:
        if not pcm or len(pcm) % g711.SAMPLE_WIDTH:
            raise ValueError(f"loop audio must be 16-bit samples, got {len(pcm)} bytes")
        repeats = -(-g711.FRAME_BYTES // len(pcm))  # shorter than a frame: whole copies keep the seam exact
        self._pcm = bytes(pcm) * repeats
        self._ducked = g711.attenuated(self._pcm, LOOP_DUCKING_DB)
        self._position = 0

    def next_frame(self, ducked: bool) -> bytes:
        """The next 20 ms, at full level or ``LOOP_DUCKING_DB`` down."""
        pcm = self._ducked if ducked else self._pcm
        start, end = self._position, self._position + g711.FRAME_BYTES
        if end <= len(pcm):
            frame = pcm[start:end]
        else:
            end -= len(pcm)
            frame = pcm[start:] + pcm[:end]
        self._position = end % len(pcm)
        return frame


def rtp_destination(remote: tuple[str, int]) -> tuple[str, int]:
    """``remote`` checked as a place RTP can be sent: an IPv4 address other than 0.0.0.0, a port in 1-65535."""
    try:
        host, port = remote
        address = ipaddress.IPv4Address(host)
    except (TypeError, ValueError):
        raise ValueError(f"remote RTP address {remote!r} is not an (IPv4 address, port) pair") from None
    if address.is_unspecified:
        raise ValueError(f"remote RTP address {host} is not a destination (0.0.0.0 means hold in old SDP)")
    if not _number_in(port, 1, 65535):
        raise ValueError(f"remote RTP port {port!r} is outside 1-65535")
    return str(address), port


def check_dtmf_payload_type(dtmf_payload_type: int | None, payload_type: int) -> None:
    """None (no telephone-event) or an RTP payload type other than the audio's."""
    if dtmf_payload_type is None:
        return
    if not _number_in(dtmf_payload_type, 0, 127) or dtmf_payload_type == payload_type:
        raise ValueError(f"DTMF payload type {dtmf_payload_type!r} is not an RTP payload type (0-127) "
                         f"other than the audio's ({payload_type})")


def _number_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class _Connection:
    """What the SDP negotiated; replaced as a whole so the media thread never sees half of it."""

    remote: tuple[str, int]
    payload_type: int
    dtmf_payload_type: int | None
    decode: g711.Converter
    encode: g711.Converter
    silence_payload: bytes = field(repr=False)


class MediaLeg:
    """One RTP stream (one side of a call). Created by ``MediaEngine.open_leg``."""

    def __init__(self, engine: MediaEngine, sock: socket.socket, local_port: int) -> None:
        self.local_port = local_port
        self.stats = LegStats()
        self.last_rx = time.monotonic()
        self.on_dtmf: Callable[[str], None] | None = None
        # Each frame heard from the far end (20 ms of 16-bit PCM), on the media thread: keep it short.
        self.on_frame: Callable[[bytes], None] | None = None
        self.on_recorder_error: Callable[[Exception], None] | None = None
        self.recorder_error: Exception | None = None
        self.closed = False
        self._engine = engine
        self._sock = sock
        self._conn: _Connection | None = None
        self._peer: tuple[str, int] | None = None
        self._jitter = JitterBuffer(self.stats)
        self._ssrc_in: int | None = None
        self._timestamp_in = 0
        self._dtmf_timestamp: int | None = None
        self._playback: deque[bytes] = deque()
        self._played = threading.Condition()
        self._recorder: Recorder | None = None
        self._sources: tuple[MediaLeg, ...] = ()  # replaced whole, so the media thread never sees half of it
        self._listeners: set[MediaLeg] = set()  # the legs hearing this one; under the engine's hearing lock
        self._loop: Loop | None = None
        self._rx_frame = g711.SILENCE_FRAME
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._timestamp = random.getrandbits(32)
        self._marker = MARKER
        self._warned_source = False
        self._send_errors_logged: set[type[Exception]] = set()

    def __repr__(self) -> str:
        return f"<MediaLeg :{self.local_port} → {self._peer or (self._conn and self._conn.remote)}>"

    def connect(self, remote: tuple[str, int], payload_type: int, dtmf_payload_type: int | None = None) -> None:
        """Send to ``remote`` with this G.711 payload type (0 PCMU, 8 PCMA); callable again on re-INVITE.

        The first RTP packet received latches the peer (a NATed phone sends from elsewhere than
        its SDP says); from then on packets from any other source are ignored. An address RTP
        cannot go to (not IPv4, 0.0.0.0, a port outside 1-65535) or an unusable payload type
        raises ValueError and leaves the previous connection as it was.
        """
        destination = rtp_destination(remote)
        encode = g711.encoder(payload_type)
        check_dtmf_payload_type(dtmf_payload_type, payload_type)
        self._conn = _Connection(
            remote=destination,
            payload_type=payload_type,
            dtmf_payload_type=dtmf_payload_type,
            decode=g711.decoder(payload_type),
            encode=encode,
            silence_payload=encode(g711.SILENCE_FRAME),
        )
        self._peer = None
        self._warned_source = False
        self.last_rx = time.monotonic()

    def play(self, pcm: bytes) -> None:
        """Queue 16-bit signed mono 8 kHz PCM after whatever is playing."""
        frames = g711.frames(pcm)
        with self._played:
            self._playback.extend(frames)

    def stop_playback(self) -> None:
        with self._played:
            self._playback.clear()
            self._played.notify_all()

    @property
    def playing(self) -> bool:
        """Prompts queued by ``play`` are still being sent (the loop does not count)."""
        return bool(self._playback)

    def wait_played(self, timeout: float) -> bool:
        """Block until everything queued has been sent; False on timeout."""
        with self._played:
            return self._played.wait_for(lambda: not self._playback, timeout)

    def loop(self, pcm: bytes) -> None:
        """Repeat 16-bit signed mono 8 kHz PCM with no gap until ``stop_loop`` (hold music); replaces any loop.

        Alone it is sent at full level; under a prompt or the legs this one hears, ``LOOP_DUCKING_DB`` down.
        """
        self._loop = Loop(pcm)

    def stop_loop(self) -> None:
        self._loop = None

    @property
    def hears(self) -> tuple[MediaLeg, ...]:
        """The legs whose received audio this one sends, summed (``MediaEngine.set_hears``)."""
        return self._sources

    @property
    def gap_seconds(self) -> float:
        """Time the engine's clock skipped during this leg, written to its recording as silence."""
        return self.stats.gap_frames * TICK_SECONDS

    @property
    def longest_gap_seconds(self) -> float:
        return self.stats.longest_gap_frames * TICK_SECONDS

    def attach_recorder(self, recorder: Recorder) -> None:
        """Each tick from now: ``recorder.write(left=received audio, right=sent audio)``."""
        self.recorder_error = None
        self._recorder = recorder

    def detach_recorder(self) -> Recorder | None:
        """Stop recording; returns the recorder (closing it is the caller's job)."""
        recorder, self._recorder = self._recorder, None
        return recorder

    def close(self) -> None:
        """Stop sending and receiving; the port goes back to the pool. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._recorder = None
        self.stop_playback()
        self.stop_loop()
        self._engine.unbridge(self)
        self._engine._submit(lambda: self._engine._remove(self))

    # The methods below run on the media thread only.

    def _receive(self, data: bytes, source: tuple[str, int], now: float) -> None:
        stats = self.stats
        if len(data) < 12 or data[0] & 0xC0 != RTP_VERSION_2:
            stats.ignored_not_rtp += 1  # STUN (first bits 00), garbage
            return
        payload_type = data[1] & 0x7F
        conn = self._conn
        if payload_type in RTCP_PAYLOAD_TYPES:
            stats.ignored_not_rtp += 1
            return
        if conn is None or (payload_type != conn.payload_type and payload_type != conn.dtmf_payload_type):
            stats.ignored_payload += 1
            return
        if source != self._peer:
            if self._peer is not None:
                self._ignore_source(source)
                return
            self._peer = source
        _, _, _, timestamp, ssrc = RTP_HEADER.unpack_from(data)
        if ssrc != self._ssrc_in:
            self._ssrc_in = ssrc
            self._rebase(timestamp)
        offset = self._offset(timestamp)
        if abs(offset // g711.FRAME_SAMPLES - self._jitter.end) > RESYNC_FRAMES:
            self._rebase(timestamp)
            offset = self._offset(timestamp)
        stats.received += 1
        self.last_rx = now
        if payload_type == conn.payload_type:
            pcm = conn.decode(rtp_payload(data))
            if len(pcm) == g711.FRAME_BYTES and not offset % g711.FRAME_SAMPLES:
                self._jitter.put(offset // g711.FRAME_SAMPLES, pcm)
            else:
                self._jitter.put_samples(offset, pcm)
        else:
            self._dtmf(rtp_payload(data), timestamp, offset)

    def _offset(self, timestamp: int) -> int:
        """Samples since the stream's base, signed: a packet reordered before the first is slightly negative."""
        return ((timestamp - self._timestamp_in + 0x80000000) & 0xFFFFFFFF) - 0x80000000

    def _rebase(self, timestamp: int) -> None:
        """A new or restarted stream (new SSRC, or a jump of over 2 s): it continues after what was received.

        The wall clock already had its silence while nothing came, so nothing buffered is discarded.
        """
        self._timestamp_in = (timestamp - self._jitter.end * g711.FRAME_SAMPLES) & 0xFFFFFFFF

    def _ignore_source(self, source: tuple[str, int]) -> None:
        self.stats.ignored_source += 1
        if not self._warned_source:
            self._warned_source = True
            log.warning("%r: ignoring RTP from %s:%d (latched to %s:%d)", self, *source, *self._peer)

    def _dtmf(self, payload: bytes, timestamp: int, offset: int) -> None:
        """RFC 2833: every packet of one event shares its timestamp; report the event once."""
        if len(payload) < 4 or payload[0] >= len(DTMF_EVENTS):
            return
        duration = struct.unpack_from("!H", payload, 2)[0]
        self._jitter.fill_silence(offset // g711.FRAME_SAMPLES, (offset + duration) // g711.FRAME_SAMPLES)
        if timestamp != self._dtmf_timestamp:
            self._dtmf_timestamp = timestamp
            if self.on_dtmf is not None:
                self.on_dtmf(DTMF_EVENTS[payload[0]])

    def _take_received(self) -> None:
        self._rx_frame = self._jitter.pop() or g711.SILENCE_FRAME
        if self.on_frame is not None:
            self.on_frame(self._rx_frame)

    def _next_outgoing(self) -> bytes:
        sources = self._sources
        heard = sources[0]._rx_frame if len(sources) == 1 else received_sum(sources)
        if self._playback or self._loop is not None:
            return self._over_heard(heard)
        return heard

    def _over_heard(self, heard: bytes) -> bytes:
        """The next prompt frame over ``heard``, and the loop under both."""
        prompt = self._next_prompt_frame()
        frame = heard if prompt is None else g711.mix(heard, prompt)
        loop = self._loop
        if loop is not None:
            frame = g711.mix(frame, loop.next_frame(ducked=prompt is not None or bool(self._sources)))
        return frame

    def _next_prompt_frame(self) -> bytes | None:
        if not self._playback:
            return None
        frame = self._playback.popleft()
        if not self._playback:
            with self._played:
                self._played.notify_all()
        return frame

    def _send(self) -> None:
        frame = self._next_outgoing()
        conn = self._conn
        if conn is not None:
            payload = conn.silence_payload if frame is g711.SILENCE_FRAME else conn.encode(frame)
            header = RTP_HEADER.pack(RTP_VERSION_2, conn.payload_type | self._marker, self._seq, self._timestamp, self._ssrc)
            self._marker = 0
            self._seq = (self._seq + 1) & 0xFFFF
            self._timestamp = (self._timestamp + g711.FRAME_SAMPLES) & 0xFFFFFFFF
            try:
                self._sock.sendto(header + payload, self._peer or conn.remote)
                self.stats.sent += 1
            except SEND_ERRORS as exc:
                self._send_failed(exc)
        recorder = self._recorder
        if recorder is not None:
            self._record(recorder, self._rx_frame, frame)

    def _send_failed(self, exc: Exception) -> None:
        """Counted every time, logged once per kind of error: a bad destination fails 50 times a second."""
        self.stats.send_errors += 1
        if type(exc) not in self._send_errors_logged:
            self._send_errors_logged.add(type(exc))
            log.warning("%r: cannot send RTP (%s: %s); counting further %s without logging them",
                        self, type(exc).__name__, exc, type(exc).__name__)

    def _skipped(self, frames: int, silence: bytes) -> None:
        """The clock skipped ``frames`` ticks: count the gap and record ``silence`` (that many silent frames)."""
        stats = self.stats
        stats.gap_frames += frames
        stats.longest_gap_frames = max(stats.longest_gap_frames, frames)
        recorder = self._recorder
        if recorder is not None:
            self._record(recorder, silence, silence)

    def _record(self, recorder: Recorder, received: bytes, sent: bytes) -> None:
        try:
            recorder.write(received, sent)
        except (RecordingError, OSError) as exc:
            self._recorder = None
            self.recorder_error = exc
            log.error("%r: recording stopped: %s", self, exc)
            if self.on_recorder_error is not None:
                self.on_recorder_error(exc)


def received_sum(legs: tuple[MediaLeg, ...]) -> bytes:
    """What ``legs`` received this tick, summed; silence for none."""
    total = g711.SILENCE_FRAME
    for leg in legs:
        total = g711.mix(total, leg._rx_frame)
    return total


def rtp_payload(packet: bytes) -> bytes:
    """The payload of an RTP packet, past CSRCs and header extension, without padding."""
    first = packet[0]
    if first == RTP_VERSION_2:  # the usual case: no CSRC, no extension, no padding
        return packet[12:]
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10 and len(packet) >= start + 4:
        start += 4 + 4 * struct.unpack_from("!H", packet, start + 2)[0]
    end = len(packet) - packet[-1] if first & 0x20 else len(packet)
    return packet[start:end]


class MediaEngine:
    """Every leg of the process: sockets, port pool and the 20 ms clock. One per process."""

    def __init__(self, bind_ip: str, port_min: int, port_max: int) -> None:
        self.bind_ip = bind_ip
        self.port_min = port_min
        self.port_max = port_max
        self.stats = EngineStats()
        first_even = port_min + (port_min & 1)
        self._free_ports = deque(range(first_even, port_max + 1, 2))
        self._pool_size = len(self._free_ports)
        self._pool_lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._legs: list[MediaLeg] = []
        self._hearing_lock = threading.Lock()
        self._commands: deque[Callable[[], None]] = deque()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def free_ports(self) -> int:
        return len(self._free_ports)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("media engine already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="media", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the clock and close every leg still open."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join()
        self._run_commands()
        for leg in list(self._legs):
            leg.close()
        self._run_commands()

    def open_leg(self) -> MediaLeg:
        """A new leg on a free even port; ports taken by other programs are skipped."""
        with self._pool_lock:
            for _ in range(len(self._free_ports)):
                port = self._free_ports.popleft()
                sock = self._bind(port)
                if sock is not None:
                    break
                self._free_ports.append(port)
            else:
                raise PortPoolExhausted(
                    f"no free RTP port in {self.bind_ip}:{self.port_min}-{self.port_max}: "
                    f"{self._pool_size - len(self._free_ports)} of {self._pool_size} in use by calls, the rest by other programs"
                )
        leg = MediaLeg(self, sock, port)
        self._submit(lambda: self._add(leg))
        return leg

    def set_hears(self, listener: MediaLeg, sources: Iterable[MediaLeg]) -> None:
        """From the next tick ``listener`` sends the sum of what ``sources`` received (none: it hears nobody).

        Who hears whom is one-way: a listening supervisor hears customer and agent while
        nobody hears the supervisor. A leg that is closed, of another engine, or the listener
        itself raises ValueError and nothing changes.
        """
        chosen = tuple(dict.fromkeys(sources))
        if listener in chosen:
            raise ValueError(f"{listener!r} cannot hear itself")
        with self._hearing_lock:
            for leg in (listener, *chosen):
                if leg._engine is not self:
                    raise ValueError(f"{leg!r} belongs to another media engine")
                if leg.closed:
                    raise ValueError(f"{leg!r} is closed")
            for source in listener._sources:
                source._listeners.discard(listener)
            for source in chosen:
                source._listeners.add(listener)
            listener._sources = chosen

    def bridge(self, a: MediaLeg, b: MediaLeg) -> None:
        """A two-party call: each leg hears the other only (other legs hearing them still do)."""
        self.set_hears(a, [b])
        self.set_hears(b, [a])

    def unbridge(self, leg: MediaLeg) -> None:
        """From the next tick ``leg`` hears nobody and nobody hears it."""
        with self._hearing_lock:
            for listener in leg._listeners:
                listener._sources = tuple(source for source in listener._sources if source is not leg)
            leg._listeners.clear()
            for source in leg._sources:
                source._listeners.discard(leg)
            leg._sources = ()

    def _bind(self, port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.bind_ip, port))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def _submit(self, command: Callable[[], None]) -> None:
        """Run on the media thread at the next tick (or now if the engine is not running)."""
        if self._thread is None:
            command()
        else:
            self._commands.append(command)

    def _add(self, leg: MediaLeg) -> None:
        self._selector.register(leg._sock, selectors.EVENT_READ, leg)
        self._legs.append(leg)

    def _remove(self, leg: MediaLeg) -> None:
        if leg in self._legs:
            self._legs.remove(leg)
            self._selector.unregister(leg._sock)
        leg._sock.close()
        with self._pool_lock:
            self._free_ports.append(leg.local_port)  # at the back: stray packets of this call die out first

    def _run_commands(self) -> None:
        while self._commands:
            self._commands.popleft()()

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stopping.is_set():
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            next_tick = self._account_lateness(now, next_tick)
            self._run_commands()
            self._receive_all(now)
            self._tick()
            next_tick += TICK_SECONDS

    def _account_lateness(self, now: float, tick_time: float) -> float:
        """Late ticks are replayed back to back unless too far behind: then skipped, and recorded as silence.

        Either way a recording stays as long as the call.
        """
        lateness = now - tick_time
        stats = self.stats
        stats.ticks += 1
        stats.max_lateness = max(stats.max_lateness, lateness)
        if lateness > TICK_SECONDS:
            stats.late_ticks += 1
        if lateness > CATCH_UP_LIMIT:
            skipped = int(lateness / TICK_SECONDS)
            stats.skipped_ticks += skipped
            self._skip_ticks(skipped)
            return now
        return tick_time

    def _skip_ticks(self, frames: int) -> None:
        silence = bytes(frames * g711.FRAME_BYTES)  # one write per recorder, shared by all
        for leg in self._legs:
            try:
                leg._skipped(frames, silence)
            except Exception:  # a recorder of another kind failing: the clock must go on
                log.exception("%r: recording a gap failed", leg)

    def _receive_all(self, now: float) -> None:
        for key, _ in self._selector.select(0):
            leg: MediaLeg = key.data
            sock = leg._sock
            try:
                for _ in range(RECEIVE_BURST):
                    data, source = sock.recvfrom(2048)
                    leg._receive(data, source, now)
            except (BlockingIOError, InterruptedError):
                pass
            except Exception:
                log.exception("%r: receive failed", leg)

    def _tick(self) -> None:
        legs = self._legs
        for leg in legs:
            leg._take_received()
        for leg in legs:
            try:
                leg._send()
            except Exception:
                log.exception("%r: tick failed", leg)
