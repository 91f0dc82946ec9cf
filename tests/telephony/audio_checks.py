"""Judging audio in tests: 20 ms RMS envelopes correlated over lags of 0–2 s.

RMS alone passes noise; on this machine the envelope correlation of a recording with its
source was 1.000 for the same speech, 0.52 for another espeak sentence, 0.18 for silence and
0.01 for a tone, so 0.9 separates right from wrong (shared/sip-notes.md).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

MATCH_THRESHOLD = 0.9


def envelope(samples: np.ndarray, sample_rate: int = 8000, frame_ms: int = 20) -> np.ndarray:
    """RMS of each 20 ms frame of int16 (or float) samples."""
    size = sample_rate * frame_ms // 1000
    count = len(samples) // size
    frames = samples[: count * size].astype(np.float64).reshape(count, size)
    return np.sqrt((frames**2).mean(axis=1))


def best_correlation(source: np.ndarray, recorded: np.ndarray, max_lag_s: float = 2.0,
                     sample_rate: int = 8000) -> tuple[float, float]:
    """Highest Pearson correlation of the envelopes with the recording delayed by 0..max_lag_s; (value, lag s)."""
    src, rec = envelope(source, sample_rate), envelope(recorded, sample_rate)
    best, best_lag = -1.0, 0
    for lag in range(int(max_lag_s * 50) + 1):
        window = rec[lag: lag + len(src)]
        if len(window) < len(src) // 2:
            break
        head = src[: len(window)]
        if head.std() == 0 or window.std() == 0:
            continue
        value = float(np.corrcoef(head, window)[0, 1])
        if value > best:
            best, best_lag = value, lag
    return best, best_lag * 0.02


def read_wav(path: Path | str) -> tuple[np.ndarray, int]:
    """Samples as int16, shape (frames, channels), and the sample rate."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2, f"{path}: not 16-bit"
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return data.reshape(-1, wav.getnchannels()), wav.getframerate()


def pcm_samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16)
