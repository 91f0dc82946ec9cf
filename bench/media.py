"""Media-path capacity: N recorded calls streaming G.711 speech both ways, in one process.

Each call is a pair of legs on 127.0.0.1: Hotline's leg (recorded, as in production) and a
phone's leg, both in this process, so every figure carries both ends of the call. The same
load runs twice: through ``MediaEngine`` (one thread, one 20 ms clock) and through a baseline
shaped like stock pyVoIP (per leg a receive thread polling every 10 ms and a send thread on a
20 ms clock, no jitter buffer). Both use the same G.711 conversion and recorder, so the ratio
measures the threading design. A third run, ``apart``, is shaped like production: the phones'
legs run in a child process and only Hotline's recorded legs are measured. Two more runs
measure the mixer: ``bridged`` relays each call through two Hotline legs (customer and agent,
each with its phone: four legs a call, the customer's recorded), and ``listen`` adds a
supervisor listening to both (six legs a call, the supervisor's leg mixing two sources).

    python bench/media.py --calls 50 100 200 --seconds 20 [--modes engine threaded apart bridged listen]

Figures: CPU as % of one core (user/sys), CPU per call, empty frames in the middle of the
recordings (the speech carries faint noise, so an all-zero frame means no audio arrived in
time), and the worst lateness of a 20 ms tick.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from telephony import g711
from telephony.media import EngineStats, MediaEngine, MediaLeg
from telephony.prompts import render_text
from telephony.recorder import StereoWavRecorder

SPEECH_TEXT = "您好，这里是售后服务热线，请问有什么可以帮您？我们会尽快为您处理。"
TTS_COMMAND = "espeak-ng -v cmn -s 150 -w {out} {text}"
PORT_BASE = 42000
MARGIN_SECONDS = 1.0  # skipped at both ends of each recording when counting empty frames


@dataclass
class Run:
    mode: str
    calls: int
    threads: int
    user: float
    system: float
    wall: float
    empty_frames: int
    frames: int
    max_lateness: float
    late_ticks: int

    def line(self) -> str:
        cpu = 100 * (self.user + self.system) / self.wall
        return (
            f"{self.mode:9} {self.calls:5} {self.threads:7} {cpu:6.1f} ({100 * self.user / self.wall:.0f}/"
            f"{100 * self.system / self.wall:.0f}) {cpu / self.calls:8.3f} "
            f"{100 * self.empty_frames / max(self.frames, 1):8.3f} {1000 * self.max_lateness:9.1f} {self.late_ticks:6}"
        )


HEADER = "mode      calls threads  CPU% (usr/sys) CPU%/call  empty%   max-late-ms late-ticks"


def speech_pcm(seconds: float, cache: Path) -> bytes:
    """Mandarin espeak-ng speech looped to ``seconds``, with faint noise so no frame is all zero."""
    speech = np.frombuffer(render_text(SPEECH_TEXT, TTS_COMMAND, cache), dtype=np.int16)
    samples = np.resize(speech, int(seconds * g711.SAMPLE_RATE)).astype(np.int32)
    noise = np.random.default_rng(1).integers(-40, 41, len(samples))
    return np.clip(samples + noise, -32768, 32767).astype(np.int16).tobytes()


def empty_frames(path: Path) -> tuple[int, int]:
    """(all-zero frames, frames) of the left channel, outside the margins."""
    data = np.fromfile(path, dtype=np.int16, offset=44)[0::2]
    margin = int(MARGIN_SECONDS * g711.SAMPLE_RATE)
    middle = data[margin: len(data) - margin]
    count = len(middle) // g711.FRAME_SAMPLES
    frames = middle[: count * g711.FRAME_SAMPLES].reshape(count, g711.FRAME_SAMPLES)
    return int((~frames.any(axis=1)).sum()), count


def measure(seconds: float) -> tuple[float, float, float]:
    """Sleep ``seconds``; the process's user and system CPU seconds and the wall time it took."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    time.sleep(seconds)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - started
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, wall


def count_empty(paths: list[Path]) -> tuple[int, int]:
    totals = [empty_frames(path) for path in paths]
    return sum(empty for empty, _ in totals), sum(frames for _, frames in totals)


def run_engine(calls: int, seconds: float, speech: bytes, workdir: Path) -> Run:
    engine = MediaEngine("127.0.0.1", PORT_BASE, PORT_BASE + 4 * calls + 10)
    engine.start()
    recorders = []
    for index in range(calls):
        hotline, phone = engine.open_leg(), engine.open_leg()
        hotline.connect(("127.0.0.1", phone.local_port), g711.PCMU)
        phone.connect(("127.0.0.1", hotline.local_port), g711.PCMU)
        recorder = StereoWavRecorder(workdir / f"engine-{index}.wav")
        hotline.attach_recorder(recorder)
        recorders.append((hotline, recorder))
        hotline.play(speech)
        phone.play(speech)
    return finish_engine_run("engine", engine, recorders, calls, seconds)


def run_bridged(calls: int, seconds: float, speech: bytes, workdir: Path, supervised: bool = False) -> Run:
    """Customer and agent phones talking through Hotline's bridged legs; ``supervised``: a supervisor listens."""
    parties = 3 if supervised else 2
    engine = MediaEngine("127.0.0.1", PORT_BASE, PORT_BASE + 4 * parties * calls + 10)
    engine.start()
    mode = "listen" if supervised else "bridged"
    recorders = []
    for index in range(calls):
        customer, agent = phone_line(engine, speech), phone_line(engine, speech)
        engine.bridge(customer, agent)
        if supervised:
            engine.set_hears(phone_line(engine, None), [customer, agent])
        recorder = StereoWavRecorder(workdir / f"{mode}-{index}.wav")
        customer.attach_recorder(recorder)
        recorders.append((customer, recorder))
    return finish_engine_run(mode, engine, recorders, calls, seconds)


def phone_line(engine: MediaEngine, speech: bytes | None) -> MediaLeg:
    """Hotline's leg of one party, connected to the party's phone (a leg of the same engine) saying ``speech``."""
    leg, phone = engine.open_leg(), engine.open_leg()
    leg.connect(("127.0.0.1", phone.local_port), g711.PCMU)
    phone.connect(("127.0.0.1", leg.local_port), g711.PCMU)
    if speech is not None:
        phone.play(speech)
    return leg


def finish_engine_run(mode: str, engine: MediaEngine, recorders: list[tuple[MediaLeg, StereoWavRecorder]],
                      calls: int, seconds: float, after: Callable[[], object] = lambda: None) -> Run:
    """Measure the running calls, then close them and count what the recordings lack."""
    time.sleep(MARGIN_SECONDS)
    threads = threading.active_count()
    engine.stats = EngineStats()  # lateness of the measured window, as for the baseline
    user, system, wall = measure(seconds)
    stats = engine.stats
    time.sleep(MARGIN_SECONDS)
    for leg, recorder in recorders:
        leg.detach_recorder()
        recorder.close()
    engine.stop()
    after()
    empty, frames = count_empty([recorder.path for _, recorder in recorders])
    return Run(mode, calls, threads, user, system, wall, empty, frames, stats.max_lateness, stats.late_ticks)


def phones(calls: int, speech: bytes, pipe: Connection) -> None:
    """Child process: the phones' legs, playing speech to the ports the parent sends."""
    engine = MediaEngine("127.0.0.1", PORT_BASE + 4 * calls + 20, PORT_BASE + 8 * calls + 40)
    engine.start()
    legs = [engine.open_leg() for _ in range(calls)]
    pipe.send([leg.local_port for leg in legs])
    for leg, port in zip(legs, pipe.recv()):
        leg.connect(("127.0.0.1", port), g711.PCMU)
        leg.play(speech)
    pipe.recv()  # stop
    engine.stop()


def run_engine_apart(calls: int, seconds: float, speech: bytes, workdir: Path) -> Run:
    """As in production: only Hotline's recorded legs in this process, the phones in another one."""
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=phones, args=(calls, speech, theirs))
    child.start()
    engine = MediaEngine("127.0.0.1", PORT_BASE, PORT_BASE + 4 * calls + 10)
    engine.start()
    recorders = []
    for index, phone_port in enumerate(ours.recv()):
        leg = engine.open_leg()
        leg.connect(("127.0.0.1", phone_port), g711.PCMU)
        recorder = StereoWavRecorder(workdir / f"apart-{index}.wav")
        leg.attach_recorder(recorder)
        leg.play(speech)
        recorders.append((leg, recorder))
    ours.send([leg.local_port for leg, _ in recorders])
    return finish_engine_run("apart", engine, recorders, calls, seconds, after=lambda: (ours.send("stop"), child.join()))


class ThreadedLeg:
    """The baseline: pyVoIP's shape, a 10 ms polling receive thread and a 20 ms send thread per leg."""

    def __init__(self, port: int, speech: bytes, recorder: StereoWavRecorder | None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.remote: tuple[str, int] = ("127.0.0.1", 0)
        self.playback = deque(g711.frames(speech))
        self.received: deque[bytes] = deque()
        self.recorder = recorder
        self.running = True
        self.max_lateness = 0.0
        self.late_ticks = 0
        self.threads = [threading.Thread(target=self.receive, daemon=True), threading.Thread(target=self.send, daemon=True)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        self.sock.close()

    def receive(self) -> None:
        decode = g711.decoder(g711.PCMU)
        while self.running:
            try:
                packet = self.sock.recv(2048)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            self.received.append(decode(packet[12:]))

    def send(self) -> None:
        encode = g711.encoder(g711.PCMU)
        seq, timestamp, next_tick = 0, 0, time.monotonic()
        while self.running:
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            lateness = time.monotonic() - next_tick
            self.max_lateness = max(self.max_lateness, lateness)
            self.late_ticks += lateness > 0.02
            frame = self.playback.popleft() if self.playback else g711.SILENCE_FRAME
            header = bytes([0x80, g711.PCMU]) + seq.to_bytes(2, "big") + timestamp.to_bytes(4, "big") + b"\0\0\0\1"
            self.sock.sendto(header + encode(frame), self.remote)
            seq, timestamp = (seq + 1) & 0xFFFF, (timestamp + g711.FRAME_SAMPLES) & 0xFFFFFFFF
            if self.recorder is not None:
                heard = self.received.popleft() if self.received else g711.SILENCE_FRAME
                self.recorder.write(heard, frame)
            next_tick += 0.02


def run_threaded(calls: int, seconds: float, speech: bytes, workdir: Path) -> Run:
    legs: list[ThreadedLeg] = []
    recorders = []
    for index in range(calls):
        recorder = StereoWavRecorder(workdir / f"threaded-{index}.wav")
        hotline = ThreadedLeg(PORT_BASE + 4 * index, speech, recorder)
        phone = ThreadedLeg(PORT_BASE + 4 * index + 2, speech, None)
        hotline.remote, phone.remote = ("127.0.0.1", PORT_BASE + 4 * index + 2), ("127.0.0.1", PORT_BASE + 4 * index)
        legs += [hotline, phone]
        recorders.append(recorder)
    for leg in legs:
        leg.start()
    time.sleep(MARGIN_SECONDS)
    threads = threading.active_count()
    for leg in legs:
        leg.max_lateness, leg.late_ticks = 0.0, 0
    user, system, wall = measure(seconds)
    max_lateness, late_ticks = max(leg.max_lateness for leg in legs), sum(leg.late_ticks for leg in legs)
    time.sleep(MARGIN_SECONDS)
    for leg in legs:  # all told first: joining one by one while the rest still run takes minutes at 200 calls
        leg.running = False
    for leg in legs:
        leg.join()
    for recorder in recorders:
        recorder.close()
    empty, frames = count_empty([recorder.path for recorder in recorders])
    return Run("threaded", calls, threads, user, system, wall, empty, frames, max_lateness, late_ticks)


RUNNERS: dict[str, Callable[[int, float, bytes, Path], Run]] = {
    "engine": run_engine,
    "threaded": run_threaded,
    "apart": run_engine_apart,
    "bridged": run_bridged,
    "listen": lambda calls, seconds, speech, workdir: run_bridged(calls, seconds, speech, workdir, supervised=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--modes", nargs="+", choices=list(RUNNERS), default=["engine", "threaded", "apart"])
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hotline-bench-media-"))
    try:
        speech = speech_pcm(options.seconds + 3 * MARGIN_SECONDS, workdir / "prompts")
        print(HEADER, flush=True)
        for calls in options.calls:
            for mode in options.modes:
                run = RUNNERS[mode](calls, options.seconds, speech, workdir)
                print(run.line(), flush=True)
                for wav in workdir.glob("*.wav"):
                    wav.unlink()
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
