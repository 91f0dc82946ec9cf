"""Audio files in and out through pydub and the real ffmpeg: files made with ffmpeg, sox and espeak-ng."""

from __future__ import annotations

import io
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from telephony.audio import AudioError, ExportFormat, decode, export_recording, read
from tests.telephony.audio_checks import MATCH_THRESHOLD, best_correlation, pcm_samples

pytestmark = pytest.mark.timeout(120)


def ffmpeg(*arguments: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *arguments], check=True)


def tone(path: Path, frequency: int, *, seconds: float = 1.0, rate: int = 44100, channels: int = 1) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={seconds}:sample_rate={rate}",
           "-ac", str(channels), str(path))
    return path


def rms(pcm: bytes) -> float:
    return float(np.sqrt((pcm_samples(pcm).astype(np.float64) ** 2).mean()))


def dominant_frequency(samples: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    """A recorder-like stereo WAV, 8 kHz 16-bit, 3 s: a 440 Hz tone on the left, 1 kHz on the right."""
    t = np.arange(3 * 8000) / 8000
    left, right = (8000 * np.sin(2 * np.pi * f * t) for f in (440, 1000))
    path = tmp_path / "call.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(np.column_stack([left, right]).astype("<i2").tobytes())
    return path


def test_any_format_becomes_8khz_mono_16bit(tmp_path: Path) -> None:
    for name, rate, channels in (("stereo.mp3", 44100, 2), ("hold.ogg", 48000, 1), ("prompt.flac", 16000, 2),
                                 ("phone.wav", 8000, 1)):
        pcm = decode(tone(tmp_path / name, 440, seconds=1.5, rate=rate, channels=channels))
        assert abs(len(pcm) / 16000 - 1.5) < 0.1, name
        assert abs(dominant_frequency(pcm_samples(pcm)) - 440) < 5, name


def test_what_8khz_cannot_carry_is_filtered_not_folded(tmp_path: Path) -> None:
    # A 6 kHz tone would come back as a 2 kHz one at full level from audioop.ratecv (pydub's set_frame_rate).
    heard = rms(decode(tone(tmp_path / "1k.wav", 1000)))
    folded = rms(decode(tone(tmp_path / "6k.wav", 6000)))
    assert folded < heard / 50


def test_ogg_made_with_sox_matches_its_source(tmp_path: Path) -> None:
    source = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(source), "your ticket number is two four six"], check=True)
    ogg = tmp_path / "speech.ogg"
    subprocess.run(["sox", str(source), "-r", "44100", "-c", "2", str(ogg)], check=True)
    from_ogg, from_wav = decode(ogg), decode(source)
    assert abs(len(from_ogg) - len(from_wav)) < 8000 * 2 * 0.1
    assert best_correlation(pcm_samples(from_wav), pcm_samples(from_ogg), max_lag_s=0.2)[0] >= MATCH_THRESHOLD


def test_an_upload_is_read_from_its_open_file(tmp_path: Path) -> None:
    path = tone(tmp_path / "upload.mp3", 440, rate=22050)
    assert decode(io.BytesIO(path.read_bytes()), name="upload.mp3") == decode(path)


@pytest.mark.parametrize("content", [b"", b"this is not audio" * 100])
def test_bad_file_is_named_in_the_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "broken prompt.mp3"
    bad.write_bytes(content)
    with pytest.raises(AudioError, match="cannot read .*broken prompt.mp3: "):
        decode(bad)
    with pytest.raises(AudioError, match="cannot read greeting.ogg: "):
        decode(io.BytesIO(content), name="greeting.ogg")


def test_missing_file_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="nowhere.wav does not exist"):
        decode(tmp_path / "nowhere.wav")


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_recording_exports_keep_both_channels(recording: Path, tmp_path: Path, fmt: ExportFormat) -> None:
    exported = export_recording(recording, tmp_path / "downloads" / f"call.{fmt.value}", fmt)
    assert exported.is_file() and list(exported.parent.iterdir()) == [exported]  # no partial file left
    back = read(exported, exported.name).set_sample_width(2)  # vorbis decodes to 32-bit float
    assert (back.channels, back.frame_rate) == (2, 8000)
    assert abs(back.duration_seconds - 3.0) < 0.1
    samples = np.frombuffer(back.raw_data, "<i2").reshape(-1, 2)
    assert [round(dominant_frequency(samples[:, channel])) for channel in (0, 1)] == [440, 1000]
    if fmt is ExportFormat.FLAC:  # lossless: the very samples
        assert back.raw_data == read(recording, recording.name).raw_data


def test_failed_export_loses_nothing(recording: Path, tmp_path: Path) -> None:
    destination = tmp_path / "call.mp3"
    export_recording(recording, destination, ExportFormat.MP3)
    before = destination.read_bytes()
    broken = tmp_path / "broken.wav"
    broken.write_bytes(recording.read_bytes()[:30])  # a header cut short: no audio
    with pytest.raises(AudioError, match="broken.wav"):
        export_recording(broken, destination, ExportFormat.MP3)
    assert destination.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.wav", "call.mp3", "call.wav"]


def test_imports_with_warnings_as_errors() -> None:
    # pydub imports the deprecated audioop: a suite run with -W error must still load the module.
    done = subprocess.run([sys.executable, "-W", "error", "-c", "import telephony.audio"], check=False,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
