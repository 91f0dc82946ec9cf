"""Bridged calls: customers queued to agents by ``hotline sip``, both legs on its media engine.

Prints, beside the goals of issue 16 (nothing is asserted):

1. Capacity: N customers (``--calls``, default 150) ramped up at ``--rate`` per second, each
   bridged to its own agent, all held together for ``--hold`` seconds: calls really bridged
   (the least and the most up at once while held, from the calls table), audio lost (below),
   CPU of the ``hotline sip`` process over the hold, as % of one core, and of the peers.
2. Added one-way latency through Hotline, customer → agent and agent → customer, at
   ``--low-calls`` calls and at N, against a direct customer → agent call through the same
   Kamailio without Hotline in the media path (the baseline: what the network path costs).
3. Handover: with every agent busy and callers waiting, the time from an agent hanging up to
   their phone receiving the INVITE for the next caller, over ``--handovers`` handovers, split
   by the agent_events rows (on_call → available, available → ringing) into the parts before
   and after the agent is free.

Set-up. Hotline's local-PBX Kamailio (telephony/pbx.py) runs on the bench's own ports with the
hotline number 1000, the agents' extensions 2001… (digest, as for real phones) and a public
number 3000 for the direct baseline. ``hotline sip`` runs as its own process (own HOTLINE_HOME
and config: ``sip.pbx_host`` is that Kamailio, ``[queues] wrap_up_seconds = 0``, an embedded
Redis as REDIS_URL, as ``hotline run`` gives it), so its CPU is measured alone. Its database has
the default queue on 1000 and N agents (users with an extension, logged in).

Customers are sipp UACs (bench/sipp/uac_stream.xml, from 13700137000, or uac_wait.xml for the
handovers: streaming until Hotline hangs up). The agents are one sipp UAS
(bench/sipp/uas_agent.xml; uas_agent_hangup.xml for the handovers) at whose port every agent
extension is registered: bench/sipp/register.xml registers each extension with its own digest
answer, so Hotline rings ``sip:EXT@PBX`` through the PBX's 407 and ``lookup`` exactly as it rings
a softphone. sipp rather than Hotline's own Endpoint or baresip in another process: it is C,
one process for all N agents, so 150 agent streams take little of the two cores Hotline is
measured on, and it is already the bench's customer. Both stream 60 s of espeak-ng speech
(different voices and text) with faint noise, looped: no 20 ms frame is digital silence and no
two payloads of a stream are alike.

Loss (as bench/call_records.py counts it): in each customer's recording (left: the customer as
Hotline received them; right: what Hotline sent them, the agent once bridged), all-zero frames
of the customer side away from the edges, all-zero frames of the agent side from the bridge
(``calls.bridged_at``) to the customer's hang-up, less 0.5 s at both ends, and the time the WAV
falls short of the call. The media engine's own gap counter (``recordings.gap_seconds``: ticks
its clock skipped, written as silence) is printed beside it; those frames are among the silent
ones. Relay loss: packets of the capture window (below) that Hotline never passed on.

Latency: packet capture on loopback (an AF_PACKET socket with a BPF filter on the sipp side's
RTP ports, kernel timestamps; needs root or CAP_NET_RAW). Hotline relays a bridged G.711 frame
unchanged (μ-law decode then encode is the identity but for −0), so each packet a customer sends
(taken as it leaves sipp) is found again by its payload in what Hotline sends to the agent
(taken as it reaches sipp), and the other way round. Every customer streams the same file (and
every agent), so the two legs of each call are paired first: the ports in the SDP Hotline sent
the customer (its 200 OK) and the agent (its INVITE), captured on the sipp side's SIP ports, and
the calls table (which agent took which Call-ID); then every relayed packet gives a delay. The
direct baseline times the same datagram leaving the customer and reaching the agent. For the
handovers the same capture, on the agents' SIP port, stamps each agent's BYE and the next INVITE
to that extension; the agent_events ``at`` (same wall clock) split the interval.

    flock /tmp/hotline-sip.lock python bench/bridged.py [--calls 150] [--hold 60] [--rate 10]
        [--low-calls 5] [--handover-agents 4] [--handovers 20] [--talk 3] [--keep]

Short run: ``--calls 20 --hold 20``. Ports (never the tests' 5160-5199): PBX 5260, Hotline 5262,
customers' sipp 5270, agents' sipp 5274, registration 5276; RTP: Hotline 50000-59999,
customers from 40000, agents from 30000. Wrap it in ``flock /tmp/hotline-sip.lock``.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import itertools
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.call_records import (  # noqa: E402
    EDGE_SECONDS, FRAME_SAMPLES, RATE, CallTiming, concurrency, judge_call, read_sipp_log)
from bench.calls import (  # noqa: E402
    HotlineEndpoint, cpu_seconds, installation, kamailio_pids, load_average, recordings_of,
)
from config import Settings  # noqa: E402
from hotline.processes import stop_process  # noqa: E402
from models import agents as agent_rules  # noqa: E402
from models.accounts import add_user, sip_ha1  # noqa: E402
from models.agent import Agent, AgentEvent, AgentState  # noqa: E402
from models.call import Call  # noqa: E402
from models.db import session_scope  # noqa: E402
from models.queues import ensure_default_queue  # noqa: E402
from models.recording import Recording  # noqa: E402
from models.user import Role, User  # noqa: E402
from telephony import g711  # noqa: E402
from telephony.media import JITTER_FRAMES  # noqa: E402
from telephony.pbx import LocalPbx, hotline_extensions, user_extensions  # noqa: E402

PBX_PORT, HOTLINE_PORT, CUSTOMER_SIP_PORT, AGENT_SIP_PORT, REGISTER_PORT = 5260, 5262, 5270, 5274, 5276
HOTLINE_RTP = range(50000, 60000)
CUSTOMER_RTP = range(40000, 45000)  # sipp streams every call from its -mp port
AGENT_RTP = range(30000, 35000)
HOTLINE_NUMBER, DIRECT_NUMBER, FIRST_EXTENSION = "1000", "3000", 2001
AGENT_PASSWORD = "bench-agent-secret"
SCENARIOS = Path(__file__).with_name("sipp")
SOURCE_SECONDS = 60.0
SETTLE_SECONDS = 10.0  # after the last call is placed, for it to be greeted, queued and bridged
CAPTURE_SECONDS = 4.0  # of the hold, for the latency at N calls (every packet is kept in the kernel)
CAPTURE_AFTER = 5.0  # seconds into the hold
MAX_DELAY = 1.0  # a relayed packet later than this is not matched
CLOSING_ALLOWANCE = 10.0  # per call of the handover run: the closing prompt, the BYE, the next ring
GOALS = {"calls": 150, "lost": 0.001, "latency": 0.030, "handover": 0.200}


# audio

def make_sources(workdir: Path) -> None:
    """caller.ul and agent.ul: 60 s of speech each (other voice, other words) with faint noise, μ-law."""
    texts = {"caller": ("en", "Hello, my washing machine stopped working. It makes a loud noise and the door will "
                              "not open. I bought it last year. Could someone help me please."),
             "agent": ("en+f3", "Thank you for calling. I am sorry to hear that. Can you tell me the model number "
                                "and when you bought it? I will open a repair ticket for you now.")}
    for seed, (name, (voice, text)) in enumerate(texts.items(), start=1):
        spoken = workdir / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(spoken), text], check=True, capture_output=True)
        resampled = workdir / f"{name}8k.wav"
        subprocess.run(["sox", "-V1", str(spoken), "-r", str(RATE), "-c", "1", "-b", "16", str(resampled)],
                       check=True)
        with wave.open(str(resampled)) as wav:
            speech = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float64)
        samples = np.resize(speech, int(SOURCE_SECONDS * RATE))
        noisy = samples + np.random.default_rng(seed).normal(0, 60, len(samples))
        pcm = np.clip(noisy, -32768, 32767).astype(np.int16).tobytes()
        (workdir / f"{name}.ul").write_bytes(g711.encoder(g711.PCMU)(pcm))


# processes

class SippRun:
    """One sipp process of the bench, run in the work directory (where caller.ul and agent.ul are)."""

    def __init__(self, workdir: Path, tag: str, args: Sequence[object]) -> None:
        self.log = workdir / f"{tag}.log"
        with open(workdir / f"{tag}.out", "wb") as out:
            self.process = subprocess.Popen(
                ["sipp", *map(str, args), "-i", "127.0.0.1", "-nostdin", "-trace_logs", "-log_file", str(self.log)],
                cwd=workdir, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self) -> int:
        return self.process.wait()

    def stop(self) -> None:
        stop_process(self.process, timeout=5)

    def log_lines(self) -> list[list[str]]:
        return [line.split() for line in self.log.read_text(errors="replace").splitlines()] if self.log.exists() else []


def customers(workdir: Path, tag: str, number: str, calls: int, rate: float, seconds: float | None,
              scenario: str = "uac_stream.xml", wait: float = 0.0) -> SippRun:
    """``calls`` customers calling ``number`` through the PBX at ``rate`` per second, each ``seconds`` long
    (None: until the far end hangs up, uac_wait.xml, after queueing up to ``wait`` s)."""
    length = ["-d", int(seconds * 1000)] if seconds is not None else []
    limit = calls / rate + (seconds or wait) + 120  # the ramp, one call, Timer B and margin: then sipp gives up
    return SippRun(workdir, tag, [f"127.0.0.1:{PBX_PORT}", "-sf", SCENARIOS / scenario, "-s", number,
                                  "-p", CUSTOMER_SIP_PORT, "-mi", "127.0.0.1", "-mp", CUSTOMER_RTP.start,
                                  "-m", calls, "-l", calls, "-r", f"{rate:g}", *length,
                                  "-timeout", int(limit), "-timeout_error"])


def agent_phones(workdir: Path, scenario: str, talk: float | None = None) -> SippRun:
    """The one sipp answering every agent extension; with ``talk``, each agent hangs up after that long."""
    length = ["-d", int(talk * 1000)] if talk is not None else []
    return SippRun(workdir, scenario.removesuffix(".xml"), ["-sf", SCENARIOS / scenario, "-p", AGENT_SIP_PORT,
                                                            "-mi", "127.0.0.1", "-mp", AGENT_RTP.start, *length])


def register(workdir: Path, extensions: list[str]) -> set[str]:
    """Every extension registered with its digest, Contact at the agents' sipp; the ones that succeeded."""
    users = workdir / "agents.csv"
    users.write_text("SEQUENTIAL\n" + "".join(f"{ext};[authentication username={ext} password={AGENT_PASSWORD}]\n"
                                              for ext in extensions))
    run = SippRun(workdir, "register", [f"127.0.0.1:{PBX_PORT}", "-sf", SCENARIOS / "register.xml", "-inf", users,
                                        "-key", "agents_port", AGENT_SIP_PORT, "-p", REGISTER_PORT,
                                        "-m", len(extensions), "-l", 50, "-r", 100, "-timeout", 60, "-timeout_error"])
    run.wait()
    return {line[1] for line in run.log_lines() if len(line) == 2 and line[0] == "registered"}


def prepare(home: Path, calls: int) -> tuple[dict[str, str], Settings, object]:
    """Config, database (default queue, N agents logged in) and an embedded Redis; the env of ``hotline sip``."""
    config = home / "hotline.toml"
    config.write_text(f"""[sip]
pbx_host = "127.0.0.1"
hotline_numbers = ["{HOTLINE_NUMBER}"]
pbx_port = {PBX_PORT}
local_port = {HOTLINE_PORT}
rtp_port_min = {HOTLINE_RTP.start}
rtp_port_max = {HOTLINE_RTP.stop - 1}
answer_delay = 0
max_calls = {2 * calls + 50}
[prompts]
greeting = "您好"
recording_notice = "录音"
[queues]
wrap_up_seconds = 0
""", encoding="utf-8")
    env, settings, redis = installation(home, config)
    with session_scope(settings) as session:
        ensure_default_queue(session, settings)
        for index in range(calls):
            extension = str(FIRST_EXTENSION + index)
            user = add_user(session, f"agent{extension}", Role.AGENT, AGENT_PASSWORD, realm=settings.sip.realm,
                            extension=extension)
            agent_rules.log_in(session, agent_rules.agent_of(session, user), source="bench")
    return env, settings, redis


def start_pbx(home: Path, settings: Settings) -> LocalPbx:
    """Hotline's local-PBX Kamailio: the hotline number, every agent extension, and the public direct number."""
    pbx = LocalPbx(home / "pbx", hotline_numbers=[HOTLINE_NUMBER, DIRECT_NUMBER], port=PBX_PORT,
                   realm=settings.sip.realm)
    direct = (DIRECT_NUMBER, sip_ha1(DIRECT_NUMBER, settings.sip.realm, AGENT_PASSWORD))
    pbx.start([*hotline_extensions(settings), *user_extensions(settings), direct])
    return pbx


# packet capture on loopback

ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
SO_ATTACH_FILTER, SO_RCVBUFFORCE, SO_TIMESTAMPNS = 26, 33, 35
SOL_PACKET, PACKET_STATISTICS, PACKET_OUTGOING = 263, 6, 4
SKF_AD_PROTOCOL, SKF_AD_PKTTYPE = -0x1000, -0x1000 + 4
CAPTURE_BUFFER = 512 << 20  # every packet of a window stays in the kernel until the bench reads it
LD_W_ABS, LD_H_IND, LD_B_ABS, LDX_B_MSH, JEQ, JGE, JGT, RET = 0x20, 0x48, 0x30, 0xB1, 0x15, 0x35, 0x25, 0x06


def bpf_sipp_side(low: int, high: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF over the IP header: UDP leaving from a port in low-high, or arriving at one."""
    accept, drop = 13, 14
    program = [  # (code, jump if true → index, jump if false → index, k)
        (LD_W_ABS, 0, 0, SKF_AD_PROTOCOL), (JEQ, 2, drop, ETH_P_IP),
        (LD_B_ABS, 0, 0, 9), (JEQ, 4, drop, socket.IPPROTO_UDP),
        (LDX_B_MSH, 0, 0, 0), (LD_W_ABS, 0, 0, SKF_AD_PKTTYPE), (JEQ, 7, 10, PACKET_OUTGOING),
        (LD_H_IND, 0, 0, 0), (JGE, 9, drop, low), (JGT, drop, accept, high),  # source port
        (LD_H_IND, 0, 0, 2), (JGE, 12, drop, low), (JGT, drop, accept, high),  # destination port
        (RET, 0, 0, 0xFFFF), (RET, 0, 0, 0)]
    # jumps are relative to the next instruction
    return [(code, true - index - 1 if code & 0x07 == 0x05 else 0, false - index - 1 if code & 0x07 == 0x05 else 0, k)
            for index, (code, true, false, k) in enumerate(program)]


def attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", c, t, f, k & 0xFFFFFFFF) for c, t, f, k in program)
    buffer = ctypes.create_string_buffer(code)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(program), ctypes.addressof(buffer)))


@dataclass(frozen=True)
class Packet:
    at: float  # kernel timestamp, wall clock (s)
    outgoing: bool  # as it left its sender (else as it reached its receiver)
    source: int  # UDP ports
    destination: int
    data: bytes  # UDP payload


class LoopbackCapture:
    """UDP on lo leaving from, or arriving at, the ports low-high (the sipp side), kernel-timestamped."""

    def __init__(self, low: int, high: int) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        attach(self.sock, bpf_sipp_side(low, high))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_BUFFER)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("lo", 0))
        self.drops = 0
        self.stopped = False

    def stop(self) -> None:
        """Capture nothing more; what was captured stays queued for ``packets``."""
        if not self.stopped:
            attach(self.sock, [(RET, 0, 0, 0)])
            self.stopped = True

    def packets(self) -> list[Packet]:
        """Everything captured, in order; closes the socket (``drops``: packets the kernel could not queue)."""
        self.sock.setblocking(False)
        found = []
        while True:
            try:
                data, ancillary, _, address = self.sock.recvmsg(2048, 64)
            except BlockingIOError:
                break
            stamp = next((struct.unpack("qq", value) for level, kind, value in ancillary
                          if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
            header = (data[0] & 0x0F) * 4
            if stamp is None or len(data) < header + 8:
                continue
            source, destination = struct.unpack_from("!HH", data, header)
            found.append(Packet(stamp[0] + stamp[1] / 1e9, address[2] == PACKET_OUTGOING, source, destination,
                                data[header + 8:]))
        _, self.drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.sock.close()
        return found


def capture_allowed() -> str | None:
    """Why packet capture cannot run here, or None."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL)).close()
    except PermissionError:
        return "packet capture on loopback needs root or CAP_NET_RAW"
    return None


# latency

ZERO_AS_ONE = bytes.maketrans(b"\x7f", b"\xff")  # μ-law −0 comes back from decode/encode as +0


@dataclass
class Delays:
    """One direction of one path: delays of relayed packets (s), packets never relayed, calls measured."""

    delays: list[float] = field(default_factory=list)
    unrelayed: int = 0
    calls: int = 0

    @property
    def relay_loss(self) -> float:
        sent = len(self.delays) + self.unrelayed
        return self.unrelayed / sent if sent else float("nan")

    def line(self, label: str) -> str:
        if not self.delays:
            return f"  {label:34} no packet matched"
        ms = 1000 * np.array(self.delays)
        p50, p99 = np.percentile(ms, [50, 99])
        return (f"  {label:34} mean {ms.mean():6.2f}  p50 {p50:6.2f}  p99 {p99:6.2f}  max {ms.max():6.2f} ms  "
                f"({len(ms)} packets, {self.calls} calls, "
                f"{100 * self.relay_loss:.3f} % lost on the way)")


def through_hotline(packets: list[Packet], senders: range, receivers: range, legs: dict[int, int]) -> Delays:
    """Packets leaving ``senders`` for a Hotline leg, found again (by payload) leaving its paired leg for ``receivers``.

    ``legs`` maps the Hotline port each call's packets arrive at to the port that relays them.
    """
    sent: dict[int, dict[bytes, Packet]] = defaultdict(dict)
    relayed: dict[int, list[Packet]] = defaultdict(list)
    for packet in packets:
        if packet.outgoing and packet.source in senders and packet.destination in legs:
            sent[packet.destination].setdefault(payload(packet), packet)
        elif not packet.outgoing and packet.source in HOTLINE_RTP and packet.destination in receivers:
            relayed[packet.source].append(packet)
    result = Delays()
    for in_leg, out_leg in legs.items():
        originals, matched = sent.get(in_leg, {}), []
        for packet in relayed.get(out_leg, ()):
            original = originals.get(payload(packet))
            if original is not None and 0 <= packet.at - original.at <= MAX_DELAY:
                result.delays.append(packet.at - original.at)
                matched.append(original.at)
        if matched:  # between the first and the last relayed the bridge was up: the rest should have come
            result.calls += 1
            first, last = min(matched), max(matched)
            result.unrelayed += sum(1 for p in originals.values() if first <= p.at <= last) - len(matched)
    return result


def direct(packets: list[Packet], senders: range, receivers: range) -> Delays:
    """The same datagram leaving ``senders`` and reaching ``receivers`` (no Hotline in the path)."""
    left: dict[tuple[int, int, bytes], float] = {}
    result, streams = Delays(), set()
    for packet in packets:
        key = (packet.source, packet.destination, packet.data)
        if packet.source in senders and packet.destination in receivers:
            if packet.outgoing:
                left[key] = packet.at
            elif key in left:
                result.delays.append(packet.at - left.pop(key))
                streams.add(packet.data[8:12])  # the RTP SSRC: one per call
    result.calls, result.unrelayed = len(streams), len(left)
    return result


def leg_pairs(signalling: list[Packet], settings: Settings) -> dict[int, int]:
    """Each bridged call's Hotline ports, customer leg → agent leg: from the SDP Hotline sent each side
    (its 200 OK to the customer, its INVITE to the agent's extension) and the calls table (which agent)."""
    customer_legs: dict[str, int] = {}  # the customer's Call-ID → Hotline's port
    agent_legs: dict[str, int] = {}  # extension → Hotline's port in the latest INVITE to it
    for packet in signalling:
        text = packet.data.decode("utf-8", "replace")
        port, call_id = re.search(r"^m=audio (\d+)", text, re.M), header(text, "Call-ID", "i")
        if packet.outgoing or port is None or call_id is None:
            continue
        first = text.split("\r\n", 1)[0]
        if packet.destination == CUSTOMER_SIP_PORT and first.startswith("SIP/2.0 200") \
                and re.search(r"^CSeq:\s*\d+\s+INVITE", text, re.M | re.I):
            customer_legs[call_id] = int(port.group(1))
        elif packet.destination == AGENT_SIP_PORT and (target := re.match(r"INVITE sip:([^@;>]+)@", first)):
            agent_legs[target.group(1)] = int(port.group(1))
    with session_scope(settings) as session:
        agents = dict(session.execute(select(Call.sip_call_id, User.extension).join(User, User.id == Call.agent_id)
                                      .where(Call.sip_call_id.in_(list(customer_legs)))).all())
    return {customer_legs[call_id]: agent_legs[extension] for call_id, extension in agents.items()
            if extension in agent_legs}


def header(text: str, name: str, compact: str) -> str | None:
    """The first word of a SIP header's value (by its name or compact form)."""
    found = re.search(rf"^(?:{name}|{compact}):\s*(\S+)", text, re.M | re.I)
    return found.group(1) if found else None


def payload(packet: Packet) -> bytes:
    return packet.data[12:].translate(ZERO_AS_ONE)  # sipp and Hotline send RTP without CSRC or extension


# the calls' figures from the database and the recordings

@dataclass
class BridgedCall:
    call_id: str
    answered_at: datetime | None
    queued_at: datetime | None
    bridged_at: datetime | None
    ended_at: datetime | None
    path: Path | None
    gap_seconds: float


def bridged_calls(settings: Settings, call_ids: Iterable[str]) -> dict[str, BridgedCall]:
    with session_scope(settings) as session:
        rows = session.execute(select(Call.sip_call_id, Call.answered_at, Call.queued_at, Call.bridged_at,
                                      Call.ended_at, Recording.path, Recording.gap_seconds)
                               .outerjoin(Recording, Recording.call_id == Call.id)
                               .where(Call.sip_call_id.in_(list(call_ids)))).all()
    return {row[0]: BridgedCall(*row[:5], Path(row[5]) if row[5] else None, row[6] or 0.0) for row in rows}


def bridged_up(settings: Settings) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(Call)
                              .where(Call.bridged_at.is_not(None), Call.ended_at.is_(None))) or 0


def agent_side_lost(path: Path, start: float, end: float) -> tuple[int, int]:
    """(all-zero frames, frames) of the right channel (what the customer heard: the agent) from start to end s."""
    with wave.open(str(path)) as wav:
        data = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, wav.getnchannels())[:, -1]
    body = data[int(start * RATE):int(end * RATE)]
    frames = body[:len(body) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    return int((np.abs(frames).max(axis=1) == 0).sum()) if len(frames) else 0, len(frames)


@dataclass
class Loss:
    """Seconds of audio judged and lost, each side; the agent side of calls that were bridged only."""

    calls: int = 0
    bridged: int = 0
    customer_seconds: float = 0.0
    customer_lost: float = 0.0
    agent_seconds: float = 0.0
    agent_lost: float = 0.0
    missing: float = 0.0
    gaps: float = 0.0
    unreadable: int = 0

    @property
    def share(self) -> float:
        total = self.customer_seconds + self.agent_seconds
        return (self.customer_lost + self.agent_lost) / total if total else 1.0


def judge(timings: list[CallTiming], calls: dict[str, BridgedCall]) -> Loss:
    """Loss over every answered call's recording: the customer's side, the agent's side once bridged."""
    loss = Loss()
    frame = FRAME_SAMPLES / RATE
    for timing in timings:
        if timing.answered is None or timing.bye is None:
            continue
        loss.calls += 1
        call = calls.get(timing.call_id)
        expected = timing.expected_seconds
        judged = judge_call(call.path if call else None, expected)
        loss.customer_seconds += expected
        loss.customer_lost += judged.lost_seconds
        loss.missing += judged.missing_seconds
        if call is None or call.bridged_at is None or call.answered_at is None:
            continue
        loss.bridged += 1
        loss.gaps += call.gap_seconds
        offset = (call.bridged_at - call.answered_at).total_seconds()
        start, end = offset + EDGE_SECONDS, expected - EDGE_SECONDS
        if end <= start:
            continue
        try:
            lost, frames = agent_side_lost(call.path, start, min(end, judged.seconds)) if call.path else (0, 0)
        except (wave.Error, EOFError, OSError):
            lost, frames = 0, 0
            loss.unreadable += 1
        loss.agent_seconds += end - start
        loss.agent_lost += lost * frame + max(0.0, (end - start) - frames * frame - frame)
    return loss


# phases

@dataclass
class Run:
    """What every phase shares: the work directory, settings, and the processes up for the whole run."""

    workdir: Path
    settings: Settings
    hotline: HotlineEndpoint
    pbx: LocalPbx
    agents: SippRun


@dataclass
class Captured:
    """A window's RTP on the sipp side and, for calls through Hotline, their legs: customer leg → agent leg."""

    packets: list[Packet] = field(default_factory=list)
    legs: dict[int, int] = field(default_factory=dict)
    drops: int = 0

    def delays(self, label: str, hotline: bool = True) -> tuple[Delays, Delays]:
        """Both ways, printed: customer → agent, agent → customer."""
        if hotline:
            backward = {agent: customer for customer, agent in self.legs.items()}
            both = (through_hotline(self.packets, CUSTOMER_RTP, AGENT_RTP, self.legs),
                    through_hotline(self.packets, AGENT_RTP, CUSTOMER_RTP, backward))
        else:
            both = direct(self.packets, CUSTOMER_RTP, AGENT_RTP), direct(self.packets, AGENT_RTP, CUSTOMER_RTP)
        print(both[0].line(f"{label}, customer → agent"))
        print(both[1].line(f"{label}, agent → customer"))
        if self.drops:
            print(f"  (the kernel dropped {self.drops} captured packets: the delays are from the rest)")
        return both


def rtp_capture() -> LoopbackCapture:
    return LoopbackCapture(AGENT_RTP.start, CUSTOMER_RTP.stop - 1)


def sip_capture() -> LoopbackCapture:
    return LoopbackCapture(CUSTOMER_SIP_PORT, AGENT_SIP_PORT)


def captured(settings: Settings, rtp: LoopbackCapture, sip: LoopbackCapture) -> Captured:
    packets = rtp.packets()
    return Captured(packets, leg_pairs(sip.packets(), settings), rtp.drops)


def latency(run: Run, number: str, calls: int, seconds: float) -> Captured:
    """``calls`` customers to ``number`` for ``seconds``, at 10/s, every packet captured."""
    rtp, sip = rtp_capture(), sip_capture()
    try:
        customers(run.workdir, f"latency-{number}-{calls}", number, calls, 10, seconds).wait()
    finally:
        rtp.stop()
        sip.stop()
    return captured(run.settings, rtp, sip)


@dataclass
class Capacity:
    asked: int
    timings: list[CallTiming]
    least_up: int
    most_up: int
    full_after: float | None  # seconds from the first INVITE until all were bridged (None: never)
    hold_seconds: float
    cpu: dict[str, float]  # % of one core over the hold
    threads: int
    window: Captured


def capacity(run: Run, calls: int, rate: float, hold: float) -> Capacity:
    """N customers ramped up at ``rate``, held together ``hold`` s; CPU and a capture window during the hold."""
    began, sip = time.monotonic(), sip_capture()
    sipp = customers(run.workdir, f"capacity-{calls}", HOTLINE_NUMBER, calls, rate,
                     calls / rate + SETTLE_SECONDS + hold)
    deadline = began + calls / rate + SETTLE_SECONDS
    while bridged_up(run.settings) < calls and time.monotonic() < deadline and sipp.process.poll() is None:
        time.sleep(0.5)
    full_after = time.monotonic() - began if bridged_up(run.settings) >= calls else None
    sip.stop()
    pids = {"hotline sip": [run.hotline.pid], "kamailio": kamailio_pids(run.pbx), "sipp customers": [sipp.pid],
            "sipp agents": [run.agents.pid]}
    before = {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}
    start, ups = time.monotonic(), []
    capture_at = start + min(CAPTURE_AFTER, hold / 4)
    rtp: LoopbackCapture | None = None
    while time.monotonic() - start < hold:
        ups.append(bridged_up(run.settings))
        if rtp is None and time.monotonic() >= capture_at:
            rtp = rtp_capture()
        if rtp is not None and time.monotonic() >= capture_at + CAPTURE_SECONDS:
            rtp.stop()  # read after the hold: reading must not cost the hold any CPU
        time.sleep(0.5)
    wall = time.monotonic() - start
    cpu = {name: 100 * (sum(cpu_seconds(pid) for pid in group) - before[name]) / wall for name, group in pids.items()}
    status = Path(f"/proc/{run.hotline.pid}/status").read_text()
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    if rtp is not None:
        rtp.stop()
    sipp.wait()
    window = captured(run.settings, rtp, sip) if rtp is not None else Captured()
    return Capacity(calls, read_sipp_log(sipp.log), min(ups, default=0), max(ups, default=0), full_after, wall, cpu,
                    threads, window)


@dataclass(frozen=True)
class Handover:
    """One agent freed while callers wait, in wall-clock seconds."""

    extension: str
    hung_up: float  # the agent's BYE leaving their phone
    free: float | None  # agent_events: on_call → available
    offered: float | None  # agent_events: available → ringing
    rung: float  # the next INVITE reaching their phone
    waiting: int  # callers queued at the hang-up


def handovers(run: Run, agents: int, count: int, talk: float) -> tuple[list[Handover], int]:
    """``agents`` agents hanging up after ``talk`` s, ``agents + count`` callers; (handovers, calls placed)."""
    wait_agents_idle(run.settings)
    keep_available(run.settings, agents)
    run.agents.stop()
    run.agents = agent_phones(run.workdir, "uas_agent_hangup.xml", talk)
    time.sleep(0.5)
    capture = LoopbackCapture(AGENT_SIP_PORT, AGENT_SIP_PORT)
    try:
        longest = (count / agents + 1) * (talk + CLOSING_ALLOWANCE)  # the last caller's wait and call
        sipp = customers(run.workdir, "handovers", HOTLINE_NUMBER, agents + count, 20, None, "uac_wait.xml", longest)
        sipp.wait()
    finally:
        capture.stop()
    hangups, rings = signalling(capture.packets())
    timings = read_sipp_log(sipp.log)
    calls = list(bridged_calls(run.settings, [t.call_id for t in timings]).values())
    events = agent_events(run.settings)
    found = []
    for extension, hung_up in hangups:
        rung = min((at for ext, at in rings if ext == extension and at > hung_up), default=None)
        if rung is None:
            continue  # the agent's last call: nobody was left waiting
        free = first_event(events[extension], AgentState.ON_CALL, AgentState.AVAILABLE, hung_up, rung)
        offered = first_event(events[extension], AgentState.AVAILABLE, AgentState.RINGING, free or hung_up, rung)
        found.append(Handover(extension, hung_up, free, offered, rung, waiting_at(calls, hung_up)))
    return found, len(timings)


def wait_agents_idle(settings: Settings, timeout: float = 60.0) -> None:
    """Until no agent rings or talks (the capacity calls are over)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(settings) as session:
            if not session.scalar(select(func.count()).select_from(Agent)
                                  .where(Agent.state.in_(agent_rules.ON_A_CALL))):
                return
        time.sleep(0.5)


def keep_available(settings: Settings, count: int) -> None:
    """The first ``count`` agents available, every other logged out."""
    with session_scope(settings) as session:
        for agent in session.scalars(select(Agent).join(Agent.user).order_by(User.extension)).all()[count:]:
            agent_rules.choose(session, agent, AgentState.LOGGED_OUT, source="bench")


def signalling(packets: list[Packet]) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(extension, time) of each BYE leaving the agents' phones and each INVITE reaching them (not retransmissions)."""
    seen: set[tuple[str, str]] = set()
    hangups, rings = [], []
    for packet in packets:
        text = packet.data.decode("utf-8", "replace")
        request = text.split("\r\n", 1)[0].split(" ")
        call_id = header(text, "Call-ID", "i")
        if call_id is None or len(request) < 2 or (request[0], call_id) in seen:
            continue
        if packet.outgoing and request[0] == "BYE":
            sender = re.search(r"^(?:From|f):[^\n]*?sip:([^@;>]+)@", text, re.M | re.I)
            if sender:
                hangups.append((sender.group(1), packet.at))
        elif not packet.outgoing and request[0] == "INVITE":
            target = re.match(r"sip:([^@;>]+)@", request[1])
            if target:
                rings.append((target.group(1), packet.at))
        else:
            continue
        seen.add((request[0], call_id))
    return hangups, rings


def agent_events(settings: Settings) -> dict[str, list[tuple[AgentState, AgentState, float]]]:
    """Every agent's (previous, state, at) in order, by extension."""
    with session_scope(settings) as session:
        rows = session.execute(select(User.extension, AgentEvent.previous, AgentEvent.state, AgentEvent.at)
                               .join(Agent, Agent.id == AgentEvent.agent_id).join(User, User.id == Agent.user_id)
                               .order_by(AgentEvent.id)).all()
    events: dict[str, list[tuple[AgentState, AgentState, float]]] = defaultdict(list)
    for extension, previous, state, at in rows:
        events[extension].append((previous, state, at.timestamp()))
    return events


def first_event(events: list[tuple[AgentState, AgentState, float]], previous: AgentState, state: AgentState,
                after: float, before: float) -> float | None:
    return next((at for was, now, at in events if was is previous and now is state and after <= at <= before), None)


def waiting_at(calls: list[BridgedCall], moment: float) -> int:
    """Callers in the queue at ``moment``: queued before it, bridged (and gone) after it."""
    def by(at: datetime | None) -> bool:
        return at is not None and at.timestamp() <= moment

    return sum(1 for call in calls if by(call.queued_at) and not by(call.bridged_at) and not by(call.ended_at))


# printing

def ms_figures(seconds: Sequence[float]) -> str:
    if not seconds:
        return "none measured"
    ms = 1000 * np.array(seconds)
    return f"mean {ms.mean():7.1f}  p50 {np.percentile(ms, 50):7.1f}  max {ms.max():7.1f} ms"


def print_capacity(result: Capacity, loss: Loss) -> None:
    peak, mean = concurrency(result.timings)
    full = f"all bridged {result.full_after:.1f} s after the first INVITE" if result.full_after else \
        f"never all {result.asked} bridged together"
    print(f"  calls placed {len(result.timings)}, answered {loss.calls}, bridged to an agent {loss.bridged}; "
          f"{full}")
    print(f"  bridged and up together during the {result.hold_seconds:.0f} s hold: least {result.least_up}, "
          f"most {result.most_up} (customers up per sipp: peak {peak}, mean {mean:.1f})")
    unreadable = f"; {loss.unreadable} WAVs unreadable" if loss.unreadable else ""
    customer, agent = ratio(loss.customer_lost, loss.customer_seconds), ratio(loss.agent_lost, loss.agent_seconds)
    print(f"  audio lost: {100 * loss.share:.4f} % — customer side {100 * customer:.4f} % of "
          f"{loss.customer_seconds:.0f} s (of which missing from the WAVs {loss.missing:.2f} s), agent side "
          f"{100 * agent:.4f} % of {loss.agent_seconds:.0f} s; media clock gaps (recordings.gap_seconds) "
          f"{loss.gaps:.2f} s{unreadable}")
    cpu = ", ".join(f"{name} {share:.0f} %" for name, share in result.cpu.items())
    per_call = result.cpu["hotline sip"] / max(result.least_up, 1)
    print(f"  CPU over the hold, % of one core: {cpu}; hotline sip {per_call:.2f} % per bridged call, "
          f"{result.threads} threads")


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else float("nan")


def print_handovers(found: list[Handover], agents: int, placed: int, talk: float) -> None:
    waiting = [h.waiting for h in found]
    print(f"  {len(found)} handovers: {agents} agents each hanging up after {talk:g} s, {placed} callers; callers "
          f"queued at each hang-up: least {min(waiting, default=0)}, most {max(waiting, default=0)}")
    parts = [("agent hangs up → next INVITE at the phone", [h.rung - h.hung_up for h in found]),
             ("  hang-up → agent available (agent_events)", [h.free - h.hung_up for h in found if h.free]),
             ("  available → ringing (the distributor's offer)",
              [h.offered - h.free for h in found if h.free and h.offered]),
             ("  ringing → INVITE at the phone", [h.rung - h.offered for h in found if h.offered])]
    for label, seconds in parts:
        print(f"  {label:48} {ms_figures(seconds)}")


def summary(result: Capacity, loss: Loss, low: tuple[Delays, Delays], high: tuple[Delays, Delays],
            baseline: tuple[Delays, Delays], found: list[Handover], low_calls: int) -> None:
    def p50(delays: Delays) -> float:
        return float(np.percentile(delays.delays, 50)) if delays.delays else float("nan")

    worst_low, worst_high = max(p50(d) for d in low), max(p50(d) for d in high)
    base = max(p50(d) for d in baseline)
    handover = [h.rung - h.hung_up for h in found]
    handover_p50 = float(np.percentile(handover, 50)) if handover else float("nan")
    rows = [("bridged calls held together", f"≥ {GOALS['calls']}", f"{result.least_up} of {result.asked}",
             result.least_up / GOALS["calls"]),
            ("audio frames lost", f"< {100 * GOALS['lost']:g} %", f"{100 * loss.share:.4f} %",
             loss.share / GOALS["lost"]),
            ("added one-way latency (p50, worse way)", f"≤ {1000 * GOALS['latency']:g} ms",
             f"{1000 * worst_low:.1f} ms at {low_calls}, {1000 * worst_high:.1f} ms at {result.asked}",
             worst_high / GOALS["latency"]),
            ("agent hangs up → next INVITE (p50)", f"≤ {1000 * GOALS['handover']:g} ms", f"{1000 * handover_p50:.0f} ms",
             handover_p50 / GOALS["handover"])]
    print("\nsummary                                   goal        measured                        ÷ goal")
    for label, goal, measured, share in rows:
        print(f"  {label:40} {goal:11} {measured:31} {share:.2f}")
    print(f"  direct path without Hotline (baseline): {1000 * base:.3f} ms; Hotline adds "
          f"{1000 * (worst_low - base):.1f} ms at {low_calls} calls, {1000 * (worst_high - base):.1f} ms at "
          f"{result.asked} (jitter buffer JITTER_FRAMES = {JITTER_FRAMES} frames of 20 ms before playout)")


def warm_up(run: Run) -> None:
    """One call after another until one is bridged to an agent: every process is up, the prompts rendered."""
    deadline = time.monotonic() + 60
    for attempt in itertools.count():
        sipp = customers(run.workdir, f"warmup{attempt}", HOTLINE_NUMBER, 1, 1, 4)
        sipp.wait()
        ids = [t.call_id for t in read_sipp_log(sipp.log)]
        if any(call.bridged_at for call in bridged_calls(run.settings, ids).values()):
            return
        if time.monotonic() > deadline:
            sys.exit("no call to the hotline was bridged to an agent in 60 s (--keep keeps the logs)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=150, help="bridged calls to hold together (and agents)")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds all of them are held together")
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second while ramping up")
    parser.add_argument("--low-calls", type=int, default=5, help="calls of the low-load latency run")
    parser.add_argument("--handover-agents", type=int, default=4, help="agents of the handover run")
    parser.add_argument("--handovers", type=int, default=20, help="handovers to measure")
    parser.add_argument("--talk", type=float, default=3.0, help="seconds each agent talks in the handover run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home: recordings, logs")
    args = parser.parse_args()
    if args.calls < max(args.low_calls, args.handover_agents, 1) or args.hold < 4 or args.rate <= 0 \
            or args.handovers < 1 or args.talk <= 0:
        parser.error("--calls must be ≥ --low-calls and --handover-agents, --hold ≥ 4, --rate, --handovers and "
                     "--talk > 0")
    return args


def measure(run: Run, args: argparse.Namespace) -> None:
    """Every phase in turn, its figures printed as it ends, then the summary."""
    print(f"\nlatency at low load ({args.low_calls} calls; packet capture on lo, kernel timestamps)", flush=True)
    baseline = latency(run, DIRECT_NUMBER, args.low_calls, 6).delays("direct, no Hotline", hotline=False)
    low = latency(run, HOTLINE_NUMBER, args.low_calls, 10).delays("through Hotline")
    print(f"\n{args.calls} bridged calls, {args.rate:g} new per second, held {args.hold:g} s", flush=True)
    result = capacity(run, args.calls, args.rate, args.hold)
    call_ids = [t.call_id for t in result.timings]
    recordings_of(run.hotline, [t.call_id for t in result.timings if t.done is not None])
    loss = judge(result.timings, bridged_calls(run.settings, call_ids))
    print_capacity(result, loss)
    print(f"  latency during the hold ({CAPTURE_SECONDS:g} s captured):")
    high = result.window.delays(f"at {args.calls} calls")
    print("\nhandovers (wrap-up 0 s)", flush=True)
    found, placed = handovers(run, args.handover_agents, args.handovers, args.talk)
    print_handovers(found, args.handover_agents, placed, args.talk)
    summary(result, loss, low, high, baseline, found, args.low_calls)


def log_problems(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return (f"hotline sip logged {sum(' WARNING ' in line for line in lines)} warnings and "
            f"{sum(' ERROR ' in line for line in lines)} errors")


def main() -> int:
    args = parse_args()
    for tool in ("sipp", "kamailio", "espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    if (problem := capture_allowed()) is not None:
        sys.exit(problem)
    home = Path(tempfile.mkdtemp(prefix="hotline-bench-bridged-"))
    if not args.keep:  # registered before the embedded Redis registers its shutdown: runs after it
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    workdir = home / "sipp"
    workdir.mkdir()
    make_sources(workdir)
    env, settings, _redis = prepare(home, args.calls)
    print(f"load average before: {load_average()}; {os.cpu_count()} cores; home {home}"
          f"{'' if args.keep else ' (removed at the end; --keep keeps it)'}", flush=True)
    pbx = start_pbx(home, settings)
    agents = agent_phones(workdir, "uas_agent.xml")
    hotline: HotlineEndpoint | None = None
    run: Run | None = None
    try:
        extensions = [str(FIRST_EXTENSION + i) for i in range(args.calls)]
        registered = register(workdir, [*extensions, DIRECT_NUMBER])
        if len(registered) < len(extensions) + 1:
            sys.exit(f"only {len(registered)} of {len(extensions) + 1} extensions registered (--keep keeps the logs)")
        hotline = HotlineEndpoint(env, home, settings)
        run = Run(workdir, settings, hotline, pbx, agents)
        warm_up(run)
        measure(run, args)
    finally:
        if hotline is not None:
            hotline.stop()
        (run.agents if run is not None else agents).stop()
        pbx.stop()
    print(f"{log_problems(home / 'hotline-sip.log')}; load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
