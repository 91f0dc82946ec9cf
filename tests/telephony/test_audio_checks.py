"""The audio checks themselves: they accept a good recording and reject the broken ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.telephony import peers
from tests.telephony.audio_checks import assert_on_channel, match, read_wav

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """The caller's speech (with a pause in the middle) and what the other side says."""
    folder = tmp_path_factory.mktemp("voices")
    caller = peers.speech_wav("Hello, my washing machine stopped working yesterday. It makes a loud noise "
                              "and the door will not open.", folder / "caller.wav", gap_seconds=1.0)
    agent = peers.speech_wav("Good morning, this is the service hotline. How can I help you today?",
                             folder / "agent.wav")
    return read_wav(caller)[0][:, 0], read_wav(agent)[0][:, 0]


def stereo_wav(path: Path, left: np.ndarray, right: np.ndarray, *, delay_s: float = 0.1) -> Path:
    """A recording as sox writes one: both tracks ``delay_s`` late, the shorter padded with silence."""
    tracks = []
    for name, samples in (("left", left), ("right", right)):
        mono = path.with_suffix(f".{name}.wav")
        peers.write_wav(mono, samples)
        tracks.append(str(mono))
    subprocess.run([peers.binary("sox"), "-M", *tracks, str(path), "pad", str(delay_s)], check=True)
    return path


def test_a_whole_recording_on_its_channel_passes(voices: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    caller, agent = voices
    recording = read_wav(stereo_wav(tmp_path / "good.wav", caller, agent))[0]
    found = assert_on_channel(caller, recording, 0)
    assert found.lag == pytest.approx(0.1) and found.coverage == 1.0
    assert_on_channel(agent, recording, 1)


def test_a_recording_that_lost_half_the_speech_is_rejected(voices: tuple[np.ndarray, np.ndarray],
                                                           tmp_path: Path) -> None:
    caller, agent = voices
    half = caller[: len(caller) // 2]
    recording = read_wav(stereo_wav(tmp_path / "half.wav", half, agent))[0]
    found = match(caller, recording[:, 0])
    assert not found.holds_source and found.coverage < 0.6, found
    with pytest.raises(AssertionError, match="left channel does not hold the source"):
        assert_on_channel(caller, recording, 0)


def test_a_recording_with_every_other_tenth_of_a_second_gone_is_rejected(
        voices: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    caller, agent = voices
    holes = caller[: len(caller) // 800 * 800].reshape(-1, 800).copy()
    holes[::2] = 0
    recording = read_wav(stereo_wav(tmp_path / "holes.wav", holes.reshape(-1), agent))[0]
    with pytest.raises(AssertionError, match="left channel does not hold the source"):
        assert_on_channel(caller, recording, 0)


def test_the_caller_on_both_channels_is_rejected(voices: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    caller, _ = voices
    recording = read_wav(stereo_wav(tmp_path / "both.wav", caller, caller // 4))[0]
    with pytest.raises(AssertionError, match="right channel holds the source too"):
        assert_on_channel(caller, recording, 0)


def test_silence_and_a_tone_are_rejected(voices: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    caller, _ = voices
    tone = (3000 * np.sin(2 * np.pi * 440 * np.arange(len(caller)) / 8000)).astype(np.int16)
    for name, left in (("silence", np.zeros_like(caller)), ("tone", tone)):
        recording = read_wav(stereo_wav(tmp_path / f"{name}.wav", left, np.zeros_like(caller)))[0]
        with pytest.raises(AssertionError, match="left channel does not hold the source"):
            assert_on_channel(caller, recording, 0)


def test_speech_delayed_mid_call_by_a_deeper_jitter_buffer_passes(voices: tuple[np.ndarray, np.ndarray],
                                                                   tmp_path: Path) -> None:
    """60 ms of silence inserted halfway (the buffer deepened by three frames): all the speech is there."""
    caller, agent = voices
    middle = len(caller) // 2
    delayed = np.concatenate([caller[:middle], np.zeros(480, dtype=np.int16), caller[middle:]])
    recording = read_wav(stereo_wav(tmp_path / "delayed.wav", delayed, agent))[0]
    found = assert_on_channel(caller, recording, 0)
    assert found.correlation >= 0.97, found


def test_another_sentence_is_rejected(voices: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    caller, agent = voices
    recording = read_wav(stereo_wav(tmp_path / "other.wav", agent, np.zeros_like(agent)))[0]
    assert match(caller, recording[:, 0]).correlation < 0.7
