"""Stereo WAV recordings written while the call runs: left the customer, right Hotline's side.

Frames are buffered in memory and written once a second by a background thread; after each
write the RIFF and data sizes in the header are rewritten, so a process killed at any moment
(even by SIGKILL: the data is in the kernel's page cache once ``write`` returns) leaves a
playable file holding everything up to the last second. ``repair_wav`` fixes a file whose header
lags its data, for recordings found unfinished at start-up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

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
    """A 16-bit stereo WAV written incrementally; thread-safe (the media thread writes, the call flow closes).

    ``write`` only appends to memory, so a slow or stalled disk never holds up the media
    thread; one background thread per process writes every recorder's audio each second.
    A failed disk write is raised (as RecordingError) by the next ``write``.
    """

    def __init__(self, path: Path | str, sample_rate: int = 8000) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._left = bytearray()
        self._right = bytearray()
        self._data_bytes = 0
        self._lock = threading.Lock()  # the buffers: taken by write, briefly by flush
        self._file_lock = threading.Lock()  # the file: flush and close only, never the media thread
        self._closed = False
        self._error: RecordingError | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")
            self._file.write(wav_header(0, sample_rate))
            self._file.flush()
        except OSError as exc:
            raise RecordingError(f"cannot create recording {self.path}: {exc.strerror or exc}") from exc
        FLUSHER.add(self)

    @property
    def duration(self) -> float:
        """Seconds of audio received so far (written or still buffered)."""
        return (self._data_bytes + 2 * len(self._left)) / (self.sample_rate * CHANNELS * SAMPLE_WIDTH)

    def write(self, left: bytes, right: bytes) -> None:
        """Append one frame per channel (16-bit mono, equal lengths). Frames after close are dropped."""
        if len(left) != len(right):
            raise ValueError(f"left and right frames differ in length ({len(left)} != {len(right)})")
        if self._error is not None:
            raise self._error
        with self._lock:
            if not self._closed:
                self._left += left
                self._right += right

    def flush(self) -> None:
        """Write what is buffered and the header covering it (the background thread does this every second)."""
        with self._file_lock:
            if self._error is not None or self._file.closed:
                return
            with self._lock:
                left, right = self._left, self._right
                self._left, self._right = bytearray(), bytearray()
            try:
                self._write(interleave(left, right))
            except RecordingError as exc:
                self._error = exc
                raise

    def close(self) -> RecordingResult:
        """Write what is buffered, finish the header and return duration, size and SHA-256.

        After a write failure, the result describes what reached the disk.
        """
        FLUSHER.remove(self)
        with self._lock:
            self._closed = True
        try:
            self.flush()
        except RecordingError:
            pass  # already raised to the media thread by write
        finally:
            self._close_file()
        return RecordingResult(
            path=self.path,
            duration=self._data_bytes / (self.sample_rate * CHANNELS * SAMPLE_WIDTH),
            sha256=file_sha256(self.path),
            size_bytes=self.path.stat().st_size,
        )

    def _close_file(self) -> None:
        with self._file_lock:
            try:
                self._file.close()
            except OSError as exc:
                raise RecordingError(f"cannot write recording {self.path}: {exc.strerror or exc}") from exc

    def _write(self, stereo: bytes) -> None:
        """Data first, then the header that covers it: a crash in between leaves a valid shorter file."""
        if not stereo:
            return
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


class Flusher:
    """The background thread writing every open recorder's buffered audio once a second."""

    def __init__(self) -> None:
        self._recorders: set[StereoWavRecorder] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, recorder: StereoWavRecorder) -> None:
        with self._lock:
            self._recorders.add(recorder)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="recording-flusher", daemon=True)
                self._thread.start()

    def remove(self, recorder: StereoWavRecorder) -> None:
        with self._lock:
            self._recorders.discard(recorder)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            with self._lock:
                recorders = list(self._recorders)
            for recorder in recorders:
                try:
                    recorder.flush()
                except RecordingError as exc:
                    log.error("%s", exc)
                    self.remove(recorder)


FLUSHER = Flusher()


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
