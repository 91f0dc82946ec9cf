"""Stereo WAV recordings: content, incremental writing, surviving SIGKILL, repair, write errors."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from telephony.recorder import RecordingError, StereoWavRecorder, repair_wav
from tests.telephony.audio_checks import read_wav

pytestmark = pytest.mark.timeout(60)

FRAME = 160  # samples of 20 ms at 8 kHz


def frame(value: int) -> bytes:
    return np.full(FRAME, value, dtype=np.int16).tobytes()


def sox_duration(path: Path) -> float:
    return float(subprocess.run(["sox", "--i", "-D", str(path)], check=True, capture_output=True, text=True).stdout)


def test_left_and_right_channels_and_result(tmp_path: Path) -> None:
    path = tmp_path / "2026" / "11" / "23" / "call.wav"
    recorder = StereoWavRecorder(path)
    for index in range(120):
        recorder.write(frame(index), frame(-index))
    assert recorder.duration == pytest.approx(2.4)
    result = recorder.close()

    assert result.path == path and result.duration == pytest.approx(2.4)
    assert result.size_bytes == path.stat().st_size == 44 + 120 * FRAME * 4
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    samples, rate = read_wav(path)
    assert rate == 8000 and samples.shape == (120 * FRAME, 2)
    assert (samples[:, 0].reshape(120, FRAME)[:, 0] == np.arange(120)).all()
    assert (samples[:, 1] == -samples[:, 0]).all()
    assert sox_duration(path) == pytest.approx(2.4)
    assert recorder.close() == result  # closing twice is harmless
    recorder.write(frame(1), frame(1))  # a late frame from the media thread is dropped
    assert path.stat().st_size == result.size_bytes


def test_header_is_valid_while_recording(tmp_path: Path) -> None:
    recorder = StereoWavRecorder(tmp_path / "live.wav")
    for _ in range(130):
        recorder.write(frame(100), frame(200))
    with wave.open(str(recorder.path)) as wav:
        assert wav.getnframes() == 0  # nothing written by the media thread itself
    time.sleep(1.5)  # the background thread writes once a second
    with wave.open(str(recorder.path)) as wav:
        assert wav.getnframes() == 130 * FRAME
    recorder.close()


def test_frames_of_different_lengths_are_refused(tmp_path: Path) -> None:
    recorder = StereoWavRecorder(tmp_path / "bad.wav")
    with pytest.raises(ValueError, match="differ"):
        recorder.write(frame(1), frame(1)[:100])
    recorder.close()


def test_disk_full_is_a_clear_error() -> None:
    with pytest.raises(RecordingError, match="/dev/full"):
        StereoWavRecorder("/dev/full")


WRITER = textwrap.dedent("""
    import resource, signal, sys, time
    import numpy as np
    from telephony.recorder import StereoWavRecorder
    path, limit = sys.argv[1], int(sys.argv[2])
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    recorder = StereoWavRecorder(path)
    print("recording", flush=True)
    start = time.monotonic()
    try:
        for index in range(1000):
            time.sleep(max(0.0, start + index * 0.02 - time.monotonic()))
            recorder.write(np.full(160, index, dtype=np.int16).tobytes(), np.full(160, -index, dtype=np.int16).tobytes())
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", flush=True)
        print(f"closed {recorder.close().duration}", flush=True)
""")


def start_writer(path: Path, file_size_limit: int = 0) -> subprocess.Popen[str]:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(file_size_limit)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    assert writer.stdout is not None and writer.stdout.readline() == "recording\n", writer.stderr.read() if writer.stderr else ""
    return writer


def test_sigkill_leaves_a_playable_file_up_to_the_last_second(tmp_path: Path) -> None:
    path = tmp_path / "killed.wav"
    writer = start_writer(path)
    time.sleep(3.5)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)

    duration = sox_duration(path)
    assert 2.4 <= duration <= 3.6, duration  # written once a second
    samples, _ = read_wav(path)
    frames = len(samples) // FRAME
    assert (samples[:, 0].reshape(frames, FRAME)[:, 0] == np.arange(frames)).all()
    assert (samples[:, 1] == -samples[:, 0]).all()
    assert repair_wav(path) is False  # the header was already right


def test_repair_wav_fixes_a_header_behind_its_data(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    recorder = StereoWavRecorder(path)
    for index in range(60):
        recorder.write(frame(index), frame(index))
    recorder.close()
    with open(path, "ab") as handle:  # killed between writing data and rewriting the header
        handle.write(np.full(FRAME * 2, 7, dtype=np.int16).tobytes() + b"\x01")
    with open(path, "r+b") as handle:  # and a header still saying "empty", as in the first second
        handle.seek(40)
        handle.write(b"\x00\x00\x00\x00")

    assert repair_wav(path) is True
    samples, _ = read_wav(path)
    assert samples.shape == (61 * FRAME, 2)
    assert sox_duration(path) == pytest.approx(1.22)
    assert repair_wav(path) is False


def test_repair_wav_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_bytes(b"not a wave file at all, just text" * 3)
    with pytest.raises(RecordingError, match="notes.wav"):
        repair_wav(path)


def test_write_failure_mid_call_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "full.wav"
    writer = start_writer(path, file_size_limit=50_000)  # full after about 1.5 s of audio
    output, errors = writer.communicate(timeout=30)
    assert "Traceback" not in errors
    assert output.startswith(f"RecordingError: cannot write recording {path}: File too large\n")
    assert output.splitlines()[-1].startswith("closed ")  # closing after the failure still gives the result
    assert 0.9 <= float(output.split()[-1]) <= 1.5
    assert 0.9 <= sox_duration(path) <= 1.5  # what fitted, header included
