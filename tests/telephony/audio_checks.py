"""Judging audio in tests: envelopes of the whole source compared with a recording at its best lag.

RMS alone passes noise; on this machine the 20 ms envelope correlation of a recording with its
source was 1.000 for the same speech, 0.52 for another espeak sentence, 0.18 for silence and
0.01 for a tone, so 0.9 separates right from wrong (shared/sip-notes.md).

Correlation alone still passes a recording that kept only part of the speech when the part is
all that is compared, and a caller heard on both channels. So the source is compared over its
whole length (what the recording lacks counts as silence), at least 90 % of the source's voiced
100 ms frames must be voiced in the recording at the same lag, and ``assert_on_channel`` also
requires the other channel not to hold the source.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MATCH_THRESHOLD = 0.9
COVERAGE_THRESHOLD = 0.9
# Two different espeak sentences correlated at 0.3–0.66 on this machine, the same one at 1.0 and
# the greeting on the other channel of a call at 0.05: a channel at or above this holds the source.
OTHER_CHANNEL_LIMIT = 0.7
ENVELOPE_MS = 20
# A second of the source may be found up to 100 ms from the best lag of the whole (see ``match``).
PIECE_FRAMES = 50
DRIFT_FRAMES = 5
# Below this a recording is not taken for the source and nothing is refined: the tests' "did not hear"
# checks (under 0.5) stay exact. The same speech shifted 60 ms halfway scored 0.70, others 0.2-0.3.
DRIFT_FROM = 0.5
COVERAGE_MS = 100
# A frame is voiced above this share of the signal's own loud frames (its 95th percentile), so
# the level the codec or the softphone gives the speech does not matter.
VOICED_SHARE = 0.1
SILENCE_RMS = 100.0  # 16-bit samples; espeak-ng speech is around 2000


@dataclass(frozen=True)
class Match:
    """How well a recording holds a source: envelope correlation and voiced-frame coverage at ``lag`` s."""

    correlation: float
    lag: float
    coverage: float

    @property
    def holds_source(self) -> bool:
        return self.correlation >= MATCH_THRESHOLD and self.coverage >= COVERAGE_THRESHOLD

    def __str__(self) -> str:
        return f"correlation {self.correlation:.3f}, {self.coverage:.0%} of the speech, {self.lag * 1000:.0f} ms late"


def envelope(samples: np.ndarray, sample_rate: int = 8000, frame_ms: int = ENVELOPE_MS) -> np.ndarray:
    """RMS of each ``frame_ms`` frame of int16 (or float) samples."""
    size = sample_rate * frame_ms // 1000
    count = len(samples) // size
    frames = samples[: count * size].astype(np.float64).reshape(count, size)
    return np.sqrt((frames**2).mean(axis=1))


def aligned(recorded: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` samples of the recording from ``start``; past its end, silence."""
    window = np.zeros(length, dtype=np.float64)
    piece = recorded[start: start + length]
    window[: len(piece)] = piece
    return window


def voiced(levels: np.ndarray) -> np.ndarray:
    if not len(levels):
        return np.zeros(0, dtype=bool)
    return levels > max(SILENCE_RMS, VOICED_SHARE * float(np.percentile(levels, 95)))


def coverage(source: np.ndarray, window: np.ndarray, sample_rate: int = 8000) -> float:
    """Share of the source's voiced 100 ms frames that are voiced in the aligned recording too."""
    src = voiced(envelope(source, sample_rate, COVERAGE_MS))
    if not src.any():
        return 1.0
    rec = voiced(envelope(window, sample_rate, COVERAGE_MS))
    return float((src & rec).sum() / src.sum())


def match(source: np.ndarray, recorded: np.ndarray, max_lag_s: float = 2.0, sample_rate: int = 8000) -> Match:
    """The best lag (0..max_lag_s, recording behind the source) over the whole source, and the match there.

    Where the recording resembles the source (at least ``DRIFT_FROM``), each second of the
    source may sit up to ``DRIFT_FRAMES`` from that lag: a jitter buffer that deepens mid-call (a loaded
    machine) delays what follows by a frame or more, and the speech is all there. Below that nothing
    is refined, so checks that a party did not hear something are not searched into a match.
    """
    src, rec = envelope(source, sample_rate), envelope(recorded, sample_rate)
    rec = np.concatenate([rec, np.zeros(len(src) + DRIFT_FRAMES)])  # past the recording's end: silence
    best, best_lag = -1.0, 0
    for lag in range(min(int(max_lag_s * 1000 / ENVELOPE_MS), len(rec) - len(src) - DRIFT_FRAMES - 1) + 1):
        value = _correlation(src, rec[lag: lag + len(src)])
        if value > best:
            best, best_lag = value, lag
    frame = sample_rate * ENVELOPE_MS // 1000
    if best < DRIFT_FROM:  # not the same speech: following drift would only search for a better fit
        return Match(best, best_lag * ENVELOPE_MS / 1000,
                     coverage(source, aligned(recorded, best_lag * frame, len(source)), sample_rate))
    window = np.concatenate([aligned(recorded, (start + lag) * frame, min(PIECE_FRAMES, len(src) - start) * frame)
                             for start, lag in _piece_lags(src, rec, best_lag)])
    return Match(max(best, _correlation(src, envelope(window, sample_rate))), best_lag * ENVELOPE_MS / 1000,
                 coverage(source, window, sample_rate))


def _piece_lags(src: np.ndarray, rec: np.ndarray, lag: int) -> list[tuple[int, int]]:
    """(first frame, lag) of each piece of the source: its best lag within ``DRIFT_FRAMES`` of ``lag``."""
    pieces = []
    for start in range(0, len(src), PIECE_FRAMES):
        piece = src[start: start + PIECE_FRAMES]
        candidates = range(max(0, lag - DRIFT_FRAMES), lag + DRIFT_FRAMES + 1)
        pieces.append((start, max(candidates, key=lambda shift: (
            _correlation(piece, rec[start + shift: start + shift + len(piece)]), -abs(shift - lag)))))
    return pieces


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) != len(b) or a.std() == 0 or b.std() == 0:
        return -1.0
    return float(np.corrcoef(a, b)[0, 1])


def best_correlation(source: np.ndarray, recorded: np.ndarray, max_lag_s: float = 2.0,
                     sample_rate: int = 8000) -> tuple[float, float]:
    """(correlation, lag s) of ``match``: the whole source counts, so a recording missing speech scores low."""
    found = match(source, recorded, max_lag_s, sample_rate)
    return found.correlation, found.lag


def assert_on_channel(source: np.ndarray, stereo: np.ndarray, channel: int, max_lag_s: float = 2.0) -> Match:
    """The whole source is on ``channel`` (0 left, 1 right) of the recording and not on the other one."""
    on, other = match(source, stereo[:, channel], max_lag_s), match(source, stereo[:, 1 - channel], max_lag_s)
    names = ("left", "right")
    assert on.holds_source, f"the {names[channel]} channel does not hold the source: {on}"
    assert other.correlation < OTHER_CHANNEL_LIMIT, f"the {names[1 - channel]} channel holds the source too: {other}"
    return on


def read_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """Samples as int16, shape (frames, channels), and the sample rate."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2, f"{path}: not 16-bit"
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return data.reshape(-1, wav.getnchannels()), wav.getframerate()


def pcm_samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16)
