"""Speech recognition with the real Vosk model (behaviour, not words) and the decoding around it."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from workers import speech
from workers.speech import BadAudio, SpeechModel


@pytest.mark.model
def test_model_loads_offline_by_path_once_per_process(helpers, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def no_network(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the model tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    first = speech.vosk_model(helpers.vosk_model_dir())
    loads = speech.model_loads()
    second = speech.vosk_model(str(helpers.vosk_model_dir()) + "/")

    assert speech.model_loads() == loads  # the second model reuses the loaded one
    assert speech.load_model(str(helpers.vosk_model_dir().resolve())) is speech.load_model(
        str(Path(str(helpers.vosk_model_dir()) + "/").resolve()))
    assert first.sample_rate == second.sample_rate == 16000


def test_a_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a Vosk model directory"):
        speech.vosk_model(tmp_path)


@pytest.mark.model
def test_stereo_8khz_gives_per_channel_segments_in_order_with_word_timings(real_model: SpeechModel,
                                                                          dialogue_wav: Path) -> None:
    result = speech.transcribe_file(dialogue_wav, real_model)

    assert result.channels == 2
    assert {s.channel for s in result.segments} == {"customer", "agent"}
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts)
    first_agent = next(s for s in result.segments if s.channel == "agent")
    assert first_agent.start > 2.5  # the agent answers after the customer's first sentence
    for segment in result.segments:
        assert segment.text and segment.words
        times = [(w["start"], w["end"]) for w in segment.words]
        assert all(start <= end for start, end in times)
        assert all(a[1] <= b[0] + 1e-3 for a, b in zip(times, times[1:]))  # increasing, no overlap
        assert segment.start == times[0][0] and segment.end == times[-1][1]
        assert all(0 <= w["conf"] <= 1 for w in segment.words)


@pytest.mark.model
def test_g711_mu_law_and_other_formats_give_the_same_result(real_model: SpeechModel, dialogue_wav: Path,
                                                           tmp_path: Path) -> None:
    mulaw = tmp_path / "call-ulaw.wav"
    subprocess.run(["sox", str(dialogue_wav), "-e", "u-law", "-b", "8", str(mulaw)], check=True)
    flac = tmp_path / "call.flac"
    subprocess.run(["sox", str(dialogue_wav), "-r", "44100", str(flac)], check=True)

    pcm = speech.transcribe_file(dialogue_wav, real_model)
    for other in (mulaw, flac):
        result = speech.transcribe_file(other, real_model)
        assert result.channels == 2 and result.segments
        assert abs(result.duration - pcm.duration) < 0.05
        assert [s.channel for s in result.segments][:1] == [pcm.segments[0].channel]


@pytest.mark.model
def test_same_audio_gives_the_same_segments_every_run(real_model: SpeechModel, dialogue_wav: Path) -> None:
    """Kaldi dithers with libc's rand(): without the seed, runs in one process differ."""
    first, second = (speech.transcribe_file(dialogue_wav, real_model).segments for _ in range(2))
    assert first == second


@pytest.mark.model
def test_silence_gives_no_segments(real_model: SpeechModel, helpers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = helpers.write_wav(tmp_path / "silence.wav", helpers.stereo(helpers.silence(5), helpers.silence(5)))
    result = speech.transcribe_file(path, real_model)
    assert result.segments == [] and result.duration == 5.0


@pytest.mark.model
@pytest.mark.slow
def test_long_recording_is_transcribed_to_the_end(real_model: SpeechModel, helpers, speech_audio,
                                                  tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Three minutes, speech only at the start and the end: nothing in between is lost or stuck.

    (Hundreds of the recogniser's chunks and a long silence; ten minutes took two minutes of CI.)"""
    korean = speech_audio["korean"]
    left = np.concatenate([korean, helpers.silence(180 - 2 * len(korean) / 8000), korean])
    path = helpers.write_wav(tmp_path / "long.wav", helpers.stereo(left, helpers.silence(180)))
    result = speech.transcribe_file(path, real_model)

    assert result.duration == 180.0
    assert result.segments[0].start < 5 and result.segments[-1].end > 170


@pytest.mark.model
def test_mono_audio_is_the_customer(real_model: SpeechModel, speech_audio, helpers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = helpers.write_wav(tmp_path / "mono.wav", speech_audio["korean"], rate=8000)
    result = speech.transcribe_file(path, real_model)
    assert result.channels == 1 and result.segments
    assert {s.channel for s in result.segments} == {"customer"}


@pytest.mark.model
def test_garbage_audio_gives_some_text_without_failing(real_model: SpeechModel, helpers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    noise = np.random.default_rng(7).integers(-20000, 20000, (8000 * 20, 2), dtype=np.int16)
    result = speech.transcribe_file(helpers.write_wav(tmp_path / "noise.wav", noise), real_model)
    assert result.duration == 20.0
    assert all(s.start <= s.end for s in result.segments)


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (b"hello, this is not audio\n" * 40, "not readable audio"),
])
def test_unreadable_input_is_bad_audio(tmp_path: Path, content: bytes, message: str, helpers) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "input.wav"
    path.write_bytes(content)
    with pytest.raises(BadAudio, match=message):
        speech.transcribe_file(path, helpers.scripted_model([], []))


def test_missing_file_is_bad_audio(tmp_path: Path, helpers) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadAudio, match="no such file"):
        speech.transcribe_file(tmp_path / "gone.wav", helpers.scripted_model([], []))


def test_truncated_wav_gives_what_it_holds(tmp_path: Path, helpers) -> None:  # type: ignore[no-untyped-def]
    path = helpers.write_wav(tmp_path / "cut.wav", helpers.stereo(helpers.silence(4), helpers.silence(4)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 1])  # header says 4 s, half is there, cut mid-sample
    result = speech.transcribe_file(path, helpers.scripted_model([(0.2, 1.0, "喂")], []))
    assert 1.9 < result.duration < 2.1
    assert [s.text for s in result.segments] == ["喂"]


def test_chunks_are_fixed_size_whatever_the_writer_does(helpers) -> None:  # type: ignore[no-untyped-def]
    """The same audio reaches the recognizer in the same pieces from a file or a live pipe."""
    seen: list[int] = []

    class Recorder:
        def AcceptWaveform(self, data: bytes) -> bool:  # noqa: N802
            seen.append(len(data))
            return False

        def Result(self) -> str:  # noqa: N802
            return "{}"

        FinalResult = Result

    model = SpeechModel("counting", 16000, Recorder)
    import io

    stream = io.BytesIO(bytes(16000 * 2 * 2))  # one second of stereo
    speech.recognize(speech.chunks(stream, speech.chunk_bytes(model, 2)), model, 2)
    assert seen == [4000 * 2] * 8  # 0.25 s per chunk, per channel


def test_wav_layout_reads_the_recorder_header_while_it_grows(tmp_path: Path) -> None:
    from telephony.recorder import StereoWavRecorder

    recorder = StereoWavRecorder(tmp_path / "r.wav", 8000)
    layout = speech.wav_layout((tmp_path / "r.wav").read_bytes())
    assert layout is not None and (layout.raw_format, layout.channels, layout.sample_rate) == ("s16le", 2, 8000)
    assert speech.available_bytes(layout, 44) == 0
    recorder.write(bytes(16000 * 2), bytes(16000 * 2))  # two seconds
    recorder.flush()  # as its background thread does every second
    layout = speech.wav_layout((tmp_path / "r.wav").read_bytes())
    assert speech.available_bytes(layout, (tmp_path / "r.wav").stat().st_size) == 64000
    recorder.close()


def test_error_rates() -> None:
    score = speech.score("a.wav", "我 要 投诉", "我 要 头 诉")
    assert (score.word_errors, score.words) == (2, 3)  # one substitution, one insertion
    assert (score.char_errors, score.chars) == (1, 4)  # 头 for 投
    assert score.cer == 0.25
