"""What one step of bench/calls.py measured: per-call timings from sipp's log, recordings judged.

sipp logs, with its clock in ms and the Call-ID, when it sent each INVITE, got the 200 OK, sent
the BYE and got its answer (bench/sipp/uac_stream.xml). From that: setup times, the calls that
were really up at once (peak and time-weighted mean), and how long each call's recording must be.

A recording loses audio two ways, both counted: frames with no audio (all zero: the caller's
speech carries faint noise, so digital silence means nothing arrived; or a sample at -32768, the
filler pyVoIP writes for a missing packet, which G.711 never decodes to), and missing time (a
WAV shorter than the call, by the difference less one frame: recordings hold whole 20 ms frames,
so a call ending mid-frame leaves up to one frame unwritten without any audio being lost).
"""

from __future__ import annotations

import sys
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RATE = 8000
FRAME_SAMPLES = 160  # 20 ms
EDGE_SECONDS = 0.5  # frames this close to the answer or the hang-up are not judged for silence
FILLER_SAMPLE = -32768


@dataclass
class CallTiming:
    """One sipp call, in seconds of sipp's clock; None for what never happened."""

    call_id: str
    invited: float
    answered: float | None = None
    bye: float | None = None
    done: float | None = None

    @property
    def ended(self) -> float | None:
        """When the call stopped being up: its hang-up completed, else sent; None if never answered."""
        return next((t for t in (self.done, self.bye, self.answered) if t is not None), None)

    @property
    def expected_seconds(self) -> float:
        """How long the caller streamed audio: the recording must be at least this long."""
        if self.answered is None or self.bye is None:
            return 0.0
        return self.bye - self.answered


def read_sipp_log(path: Path) -> list[CallTiming]:
    """The calls of a ``-trace_logs`` file written by uac_stream.xml, in the order they were placed."""
    calls: dict[str, CallTiming] = {}
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("invite", "answered", "bye", "done") or not parts[2].isdigit():
            continue
        event, call_id, seconds = parts[0], parts[1], int(parts[2]) / 1000
        if event == "invite":
            calls.setdefault(call_id, CallTiming(call_id, seconds))
        elif call_id in calls:
            setattr(calls[call_id], event, seconds)
    return list(calls.values())


def concurrency(calls: Iterable[CallTiming]) -> tuple[int, float]:
    """(peak, time-weighted mean) of calls up (answered, not yet hung up) from the first answer to the last."""
    events = []
    for call in calls:
        if call.answered is not None:
            events += [(call.answered, 1), (call.ended, -1)]
    if not events:
        return 0, 0.0
    events.sort()
    up = peak = 0
    area, last = 0.0, events[0][0]
    for moment, change in events:
        area += up * (moment - last)
        up, last = up + change, moment
        peak = max(peak, up)
    span = events[-1][0] - events[0][0]
    return peak, area / span if span else float(peak)


@dataclass(frozen=True)
class RecordingJudgement:
    seconds: float  # length of the WAV
    lost_frames: int  # silent or filled frames away from the edges
    missing_seconds: float  # how much shorter than the call it is

    @property
    def lost_seconds(self) -> float:
        return self.lost_frames * FRAME_SAMPLES / RATE + self.missing_seconds


def judge_recording(path: Path, expected_seconds: float) -> RecordingJudgement:
    """Loss in the caller's channel (the left of a stereo WAV) of a call that lasted ``expected_seconds``.

    Raises wave.Error or EOFError when the file is not a whole WAV.
    """
    with wave.open(str(path)) as wav:
        channels = wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, channels)[:, 0]
    edge = int(EDGE_SECONDS * RATE)
    body = data[edge:len(data) - edge]
    frames = body[:len(body) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    lost = (np.abs(frames).max(axis=1) == 0) | (frames == FILLER_SAMPLE).any(axis=1)
    seconds = len(data) / RATE
    return RecordingJudgement(seconds, int(lost.sum()), max(0.0, expected_seconds - seconds - FRAME_SAMPLES / RATE))


@dataclass(frozen=True)
class Limits:
    """What makes a call clean."""

    loss: float  # share of the call's time lost
    setup: float  # seconds from INVITE to 200 OK

    def describe(self) -> str:
        return (f"clean = answered and hung up normally, recorded, ≤ {100 * self.loss:g} % of the call lost "
                f"(silent or filled frames + missing time), setup ≤ {self.setup:g} s")


@dataclass
class StepFigures:
    """One endpoint at one step."""

    endpoint: str
    asked: int
    rate: float
    attempted: int = 0
    answered: int = 0
    completed: int = 0
    clean: int = 0
    peak_up: int = 0
    mean_up: float = 0.0
    setups: list[float] = field(default_factory=list)
    expected_seconds: float = 0.0
    lost_seconds: float = 0.0
    missing_seconds: float = 0.0  # the part of lost_seconds that recordings fell short of their calls
    call_seconds: float = 0.0  # calls up × time, the work the CPU figures are divided by
    cpu_seconds: float = 0.0
    pbx_cpu_seconds: float = 0.0
    sipp_busy: float = 0.0  # the load generator's CPU, % of one core

    @property
    def failed(self) -> int:
        return self.attempted - self.completed

    @property
    def lost_share(self) -> float:
        return self.lost_seconds / self.expected_seconds if self.expected_seconds else 1.0

    @property
    def missing_share(self) -> float:
        return self.missing_seconds / self.expected_seconds if self.expected_seconds else 1.0

    def setup_percentile(self, percent: float) -> float:
        return float(np.percentile(self.setups, percent)) if self.setups else float("nan")

    def cpu_per_call(self, seconds: float) -> float:
        """% of one core per call up."""
        return 100 * seconds / self.call_seconds if self.call_seconds else float("nan")


def step_figures(endpoint: str, asked: int, rate: float, calls: list[CallTiming], recordings: dict[str, Path],
                 limits: Limits) -> StepFigures:
    """Counts, concurrency, setup and loss of one step; ``recordings`` maps Call-IDs to WAVs."""
    figures = StepFigures(endpoint, asked, rate, attempted=len(calls))
    figures.peak_up, figures.mean_up = concurrency(calls)
    for call in calls:
        if call.answered is None or call.ended is None:
            continue
        setup = call.answered - call.invited
        figures.answered += 1
        figures.setups.append(setup)
        figures.call_seconds += call.ended - call.answered
        if call.done is None:
            continue
        figures.completed += 1
        expected = call.expected_seconds
        judged = judge_call(recordings.get(call.call_id), expected)
        figures.expected_seconds += expected
        figures.lost_seconds += judged.lost_seconds
        figures.missing_seconds += judged.missing_seconds
        if judged.lost_seconds <= limits.loss * expected and setup <= limits.setup:
            figures.clean += 1
    return figures


def judge_call(path: Path | None, expected_seconds: float) -> RecordingJudgement:
    """A call's recording judged; all of the call missing when there is none or it is not a whole WAV."""
    if path is not None:
        try:
            return judge_recording(path, expected_seconds)
        except (wave.Error, EOFError, OSError) as exc:
            print(f"{path}: not a readable WAV ({exc}); counted as lost", file=sys.stderr)
    return RecordingJudgement(0.0, 0, expected_seconds)
