"""Stereo WAV recordings written while the call runs: left the customer, right Hotline's side.

Frames are buffered in memory and written once per second of audio; after each write the
RIFF and data sizes in the header are rewritten, so a process killed at any moment (even by
SIGKILL: the data is in the kernel's page cache once ``write`` returns) leaves a playable file
holding everything up to the last whole second. ``repair_wav`` fixes a file whose header
lags its data, for recordings found unfinished at start-up.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADER_BYTES = 44
CHANNELS = 2
SAMPLE_WIDTH = 2
FLUSH_SECONDS = 1.0


class RecordingError(Exception):
    """A recording could not be written (disk full, permission, …); the message names the file."""


@dataclass(frozen=True)
class RecordingResult:
    path: Path
    duration: float
    sha256: str
    size_bytes: int


def wav_header(data_bytes: int, sample_rate: int) -> bytes:
    """The 44-byte header of a 16-bit stereo PCM WAV holding ``data_bytes`` of samples."""
    block_align = CHANNELS * SAMPLE_WIDTH
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE",
        b"fmt ", 16, 1, CHANNELS, sample_rate, sample_rate * block_align, block_align, SAMPLE_WIDTH * 8,
        b"data", data_bytes,
    )


def interleave(left: bytes | bytearray, right: bytes | bytearray) -> bytes:
    """Two 16-bit mono buffers of equal length as one stereo buffer (done per second, not per frame)."""
    stereo = np.empty(len(left), dtype=np.int16)
    stereo[0::2] = np.frombuffer(left, dtype=np.int16)
    stereo[1::2] = np.frombuffer(right, dtype=np.int16)
    return stereo.tobytes()


class StereoWavRecorder:
    """A 16-bit stereo WAV written incrementally; thread-safe (the media thread writes, the call flow closes)."""

    def __init__(self, path: Path | str, sample_rate: int = 8000) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._flush_bytes = int(sample_rate * FLUSH_SECONDS) * SAMPLE_WIDTH
        self._left = bytearray()
        self._right = bytearray()
        self._data_bytes = 0
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")
            self._file.write(wav_header(0, sample_rate))
            self._file.flush()
        except OSError as exc:
            raise RecordingError(f"cannot create recording {self.path}: {exc.strerror or exc}") from exc

    @property
    def duration(self) -> float:
        """Seconds of audio received so far (written or still buffered)."""
        return (self._data_bytes + 2 * len(self._left)) / (self.sample_rate * CHANNELS * SAMPLE_WIDTH)

    def write(self, left: bytes, right: bytes) -> None:
        """Append one frame per channel (16-bit mono, equal lengths). Frames after close are dropped."""
        if len(left) != len(right):
            raise ValueError(f"left and right frames differ in length ({len(left)} != {len(right)})")
        with self._lock:
            if self._closed:
                return
            self._left += left
            self._right += right
            if len(self._left) >= self._flush_bytes:
                self._flush()

    def close(self) -> RecordingResult:
        """Write what is buffered, finish the header and return duration, size and SHA-256."""
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    self._flush()
                finally:
                    self._close_file()
        return RecordingResult(
            path=self.path,
            duration=self._data_bytes / (self.sample_rate * CHANNELS * SAMPLE_WIDTH),
            sha256=file_sha256(self.path),
            size_bytes=self.path.stat().st_size,
        )

    def _close_file(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            raise RecordingError(f"cannot write recording {self.path}: {exc.strerror or exc}") from exc

    def _flush(self) -> None:
        """Data first, then the header that covers it: a crash in between leaves a valid shorter file."""
        if not self._left:
            return
        stereo = interleave(self._left, self._right)
        self._left.clear()
        self._right.clear()
        try:
            self._file.write(stereo)
            self._data_bytes += len(stereo)
            self._file.flush()
            self._file.seek(0)
            self._file.write(wav_header(self._data_bytes, self.sample_rate))
            self._file.seek(0, os.SEEK_END)
            self._file.flush()
        except OSError as exc:
            raise RecordingError(f"cannot write recording {self.path}: {exc.strerror or exc}") from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def repair_wav(path: Path | str) -> bool:
    """Make the header of a WAV written by this module match its data; True if it was changed.

    A file cut mid-frame is truncated to whole stereo samples. Files that are not ours
    (no RIFF/WAVE header) raise RecordingError.
    """
    path = Path(path)
    try:
        with open(path, "r+b") as handle:
            header = handle.read(HEADER_BYTES)
            if len(header) < HEADER_BYTES or header[:4] != b"RIFF" or header[8:12] != b"WAVE" or header[36:40] != b"data":
                raise RecordingError(f"{path} is not a WAV file written by Hotline's recorder")
            sample_rate = struct.unpack_from("<I", header, 24)[0]
            size = handle.seek(0, os.SEEK_END)
            data_bytes = (size - HEADER_BYTES) // (CHANNELS * SAMPLE_WIDTH) * (CHANNELS * SAMPLE_WIDTH)
            fixed = wav_header(data_bytes, sample_rate)
            if fixed == header and size == HEADER_BYTES + data_bytes:
                return False
            handle.truncate(HEADER_BYTES + data_bytes)
            handle.seek(0)
            handle.write(fixed)
            return True
    except OSError as exc:
        raise RecordingError(f"cannot repair recording {path}: {exc.strerror or exc}") from exc
