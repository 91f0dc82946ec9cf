"""Speech recognition: audio in any format → per-channel segments with word timings.

The recognizer interface is the part of Vosk's ``KaldiRecognizer`` that Hotline uses
(``AcceptWaveform``, ``Result``, ``FinalResult``), so tests can script one. Audio is decoded
and resampled to the model's rate by ffmpeg (any format it reads), then fed in fixed-size
chunks: the same audio and chunk size give the same segments whether it comes from a
finished file or from a recording still being written.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

# A quarter of a second per feed: small enough for live latency, large enough that the
# per-call overhead of the recognizer stays negligible.
CHUNK_SECONDS = 0.25
SAMPLE_BYTES = 2  # s16le
CHANNELS = ("customer", "agent")  # left, right


class BadAudio(Exception):
    """The input is not usable audio (empty, not audio, unreadable); retrying will not help."""


class Recognizer(Protocol):
    """What Hotline uses of ``vosk.KaldiRecognizer`` (results are Vosk's JSON strings)."""

    def AcceptWaveform(self, data: bytes) -> bool: ...  # noqa: N802 (Vosk's names)

    def Result(self) -> str: ...  # noqa: N802

    def FinalResult(self) -> str: ...  # noqa: N802


@dataclass(frozen=True)
class SpeechModel:
    """A model as the pipeline sees it: a name, its sample rate, and fresh recognizers."""

    name: str
    sample_rate: int
    new_recognizer: Callable[[], Recognizer]


@dataclass
class Segment:
    """One utterance on one channel; times in seconds from the start of the recording."""

    channel: str
    start: float
    end: float
    text: str
    words: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Transcription:
    segments: list[Segment]
    duration: float
    channels: int


# --- Vosk -------------------------------------------------------------------------------

_loads = 0


@lru_cache(maxsize=4)
def load_model(model_dir: str) -> Any:
    """The Vosk model in ``model_dir``, loaded once per process (≈ 2–3 s, hundreds of MB).

    Always by path: ``vosk.Model(lang=…)`` would try to download from the network.
    """
    global _loads
    import vosk

    if not (Path(model_dir) / "am").is_dir() and not (Path(model_dir) / "conf").is_dir():
        raise FileNotFoundError(f"not a Vosk model directory: {model_dir}")
    vosk.SetLogLevel(-2)
    began = time.monotonic()
    model = vosk.Model(model_path=model_dir)
    _loads += 1
    log.info("loaded Vosk model %s in %.1f s", model_dir, time.monotonic() - began)
    return model


def model_loads() -> int:
    """How many models this process has loaded (a reused model is not loaded again)."""
    return _loads


def model_rate(model_dir: str | Path) -> int:
    """The model's sample rate: ``--sample-frequency`` of its MFCC config, Kaldi's 16 kHz default."""
    conf = Path(model_dir) / "conf" / "mfcc.conf"
    text = conf.read_text() if conf.exists() else ""
    found = re.search(r"--sample-frequency=(\d+)", text)
    return int(found.group(1)) if found else 16000


DITHER_SEED = 1


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)


class VoskRecognizer:
    """A ``KaldiRecognizer`` with word timings, on the process's shared copy of the model."""

    def __init__(self, model_dir: str | Path, sample_rate: int) -> None:
        from vosk import KaldiRecognizer

        self._kaldi = KaldiRecognizer(load_model(str(model_dir)), sample_rate)
        self._kaldi.SetWords(True)
        # Kaldi dithers every frame with noise seeded from libc's rand(), which all recognizers
        # of the process share: without a fixed seed the same audio gives other words on each
        # run. Seeded here, a re-run, a live run and a batch run of the same audio agree.
        _libc().srand(DITHER_SEED)

    def AcceptWaveform(self, data: bytes) -> bool:  # noqa: N802
        return bool(self._kaldi.AcceptWaveform(data))

    def Result(self) -> str:  # noqa: N802
        return str(self._kaldi.Result())

    def FinalResult(self) -> str:  # noqa: N802
        return str(self._kaldi.FinalResult())


def vosk_model(model_dir: str | Path) -> SpeechModel:
    """The Vosk model at ``model_dir``, loaded now (so a bad path fails before any audio)."""
    model_dir = str(Path(model_dir).resolve())
    load_model(model_dir)
    rate = model_rate(model_dir)
    # Named by its path: "done with this model" must not confuse two models of one name.
    return SpeechModel(name=model_dir, sample_rate=rate, new_recognizer=lambda: VoskRecognizer(model_dir, rate))


# --- Decoding ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioInfo:
    channels: int
    sample_rate: int
    duration: float | None


def probe(path: str | Path) -> AudioInfo:
    """Channels, rate and length of the first audio stream; BadAudio if there is none."""
    path = Path(path)
    if not path.is_file():
        raise BadAudio(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise BadAudio(f"{path}: empty file")
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=channels,sample_rate:format=duration", "-of", "json", str(path)],
        capture_output=True, text=True,
    )
    info = json.loads(out.stdout or "{}")
    streams = info.get("streams") or []
    if out.returncode != 0 or not streams:
        reason = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "no audio stream"
        raise BadAudio(f"{path.name}: not readable audio ({reason})")
    duration = info.get("format", {}).get("duration")
    return AudioInfo(int(streams[0]["channels"]), int(streams[0]["sample_rate"]),
                     float(duration) if duration not in (None, "N/A") else None)


def decoder(input_args: list[str], channels: int, rate: int, stdin: int | None = None) -> subprocess.Popen[bytes]:
    """ffmpeg turning the input into s16le at ``rate``, at most two channels, on its stdout."""
    return subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", *input_args,
         "-map", "0:a:0", "-ac", str(channels), "-ar", str(rate), "-f", "s16le", "pipe:1"],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def chunks(stream: IO[bytes], size: int) -> Iterator[bytes]:
    """Fixed-size reads until EOF, whatever sizes the producer writes (only the last is short)."""
    while block := stream.read(size):
        yield block


# --- Recognition ------------------------------------------------------------------------

class ChannelRecognizer:
    """Feeds one channel to its recognizer and collects a segment at each endpoint."""

    def __init__(self, channel: str, recognizer: Recognizer) -> None:
        self.channel = channel
        self.recognizer = recognizer
        self.segments: list[Segment] = []

    def feed(self, pcm: bytes) -> None:
        if self.recognizer.AcceptWaveform(pcm):
            self._take(self.recognizer.Result())

    def finish(self) -> None:
        self._take(self.recognizer.FinalResult())

    def _take(self, result: str) -> None:
        data = json.loads(result)
        words = [
            {"word": w["word"], "start": round(float(w["start"]), 3), "end": round(float(w["end"]), 3),
             "conf": round(float(w.get("conf", 1.0)), 3)}
            for w in data.get("result", [])
        ]
        text = data.get("text", "").strip()
        if not text or not words:
            return
        self.segments.append(Segment(self.channel, words[0]["start"], words[-1]["end"], text, words))


def recognize(pcm_chunks: Iterable[bytes], model: SpeechModel, channels: int) -> Transcription:
    """Per-channel segments, in order of start, from interleaved s16le chunks at the model's rate."""
    if channels not in (1, 2):
        raise ValueError("one or two channels")
    recognizers = [ChannelRecognizer(CHANNELS[i], model.new_recognizer()) for i in range(channels)]
    frames = 0
    for block in pcm_chunks:
        samples = np.frombuffer(block[: len(block) - len(block) % (SAMPLE_BYTES * channels)], "<i2")
        samples = samples.reshape(-1, channels)
        frames += len(samples)
        for index, channel in enumerate(recognizers):
            channel.feed(samples[:, index].tobytes())
    for channel in recognizers:
        channel.finish()
    segments = sorted((s for c in recognizers for s in c.segments), key=lambda s: (s.start, s.channel))
    return Transcription(segments, round(frames / model.sample_rate, 3), channels)


def chunk_bytes(model: SpeechModel, channels: int) -> int:
    return int(model.sample_rate * CHUNK_SECONDS) * SAMPLE_BYTES * channels


def run_decoder(process: subprocess.Popen[bytes], model: SpeechModel, channels: int, name: str) -> Transcription:
    """Recognize what the decoder produces; its failure becomes BadAudio naming the input."""
    assert process.stdout is not None and process.stderr is not None
    try:
        result = recognize(chunks(process.stdout, chunk_bytes(model, channels)), model, channels)
    finally:
        process.stdout.close()
        errors = process.stderr.read().decode(errors="replace").strip()
        process.wait()
    if process.returncode != 0 and not result.duration:
        raise BadAudio(f"{name}: cannot decode ({errors.splitlines()[-1] if errors else process.returncode})")
    if errors:
        # A truncated file still gives what it holds; the decoder's complaint goes to the log.
        log.warning("%s: decoder reported: %s", name, errors.splitlines()[-1])
    return result


def transcribe_file(path: str | Path, model: SpeechModel) -> Transcription:
    """Transcribe any audio file ffmpeg reads; stereo is left customer, right agent."""
    info = probe(path)
    channels = min(info.channels, 2)
    return run_decoder(decoder(["-i", str(path)], channels, model.sample_rate), model, channels, Path(path).name)


# --- Recordings still being written -----------------------------------------------------

# ffmpeg's raw input formats for the WAV codes a recorder writes: (format tag, bits) → -f.
RAW_FORMATS = {(1, 8): "u8", (1, 16): "s16le", (1, 24): "s24le", (1, 32): "s32le", (3, 32): "f32le",
               (6, 8): "alaw", (7, 8): "mulaw"}
# A recorder that writes nothing for this long has died; the batch job takes over after repair.
STALL_SECONDS = 120.0


class RecordingStalled(Exception):
    """The growing recording stopped growing while still marked as being recorded."""


@dataclass(frozen=True)
class WavLayout:
    raw_format: str
    channels: int
    sample_rate: int
    block_align: int
    data_offset: int
    data_bytes: int  # as the header says; 0 or 0xFFFFFFFF while some writers are still writing


def wav_layout(head: bytes) -> WavLayout | None:
    """Where the samples of a WAV start and what they are; None until the header is complete."""
    if len(head) < 12:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise BadAudio("not a WAV file: live transcription reads the recorder's WAV only")
    offset, fmt = 12, None
    while offset + 8 <= len(head):
        chunk_id, size = head[offset:offset + 4], struct.unpack_from("<I", head, offset + 4)[0]
        if chunk_id == b"fmt " and offset + 8 + 16 <= len(head):
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", head, offset + 8)
            if tag == 0xFFFE and offset + 8 + 26 <= len(head):  # WAVE_FORMAT_EXTENSIBLE: the real tag follows
                tag = struct.unpack_from("<H", head, offset + 8 + 24)[0]
            if (tag, bits) not in RAW_FORMATS:
                raise BadAudio(f"WAV format {tag} with {bits}-bit samples cannot be read while recording")
            fmt = (RAW_FORMATS[tag, bits], channels, rate, align)
        if chunk_id == b"data":
            return WavLayout(*fmt, offset + 8, size) if fmt else None
        offset += 8 + size + size % 2
    return None


def available_bytes(layout: WavLayout, file_size: int) -> int:
    """Whole frames safe to read: up to the header's data size if it is kept current, else the file's end."""
    on_disk = file_size - layout.data_offset
    if 0 < layout.data_bytes <= on_disk:
        on_disk = layout.data_bytes
    return max(on_disk, 0) // layout.block_align * layout.block_align


def read_layout(handle: IO[bytes]) -> WavLayout | None:
    handle.seek(0)
    return wav_layout(handle.read(4096))


def tail(handle: IO[bytes], sink: IO[bytes], is_open: Callable[[], bool], poll: float, stall: float) -> None:
    """Copy a growing WAV's samples to ``sink`` until it is closed (then copy the rest)."""
    sent, grown_at = 0, time.monotonic()
    while True:
        # Asked before reading, so the last read sees everything written before the close.
        still_open = is_open()
        layout = read_layout(handle)
        end = available_bytes(layout, os.fstat(handle.fileno()).st_size) if layout else 0
        if end > sent:
            handle.seek(layout.data_offset + sent)  # type: ignore[union-attr]
            sink.write(handle.read(end - sent))
            sink.flush()
            sent, grown_at = end, time.monotonic()
        if not still_open:
            return
        if time.monotonic() - grown_at > stall:
            raise RecordingStalled(f"no audio for {stall:.0f} s while the call is still marked as recording")
        time.sleep(poll)


def wait_for_layout(handle: IO[bytes], is_open: Callable[[], bool], poll: float, stall: float) -> WavLayout:
    began = time.monotonic()
    while (layout := read_layout(handle)) is None:
        if not is_open() or time.monotonic() - began > stall:
            raise BadAudio("the recording never got a WAV header")
        time.sleep(poll)
    return layout


def transcribe_growing(path: str | Path, model: SpeechModel, is_open: Callable[[], bool],
                       poll: float = 0.25, stall: float = STALL_SECONDS) -> Transcription:
    """Transcribe a WAV while it is written, until ``is_open()`` turns false.

    A feeder thread tails the file into ffmpeg (the same resampling as for a finished file);
    this thread reads ffmpeg's output in the same fixed chunks as ``transcribe_file``.
    """
    path = Path(path)
    while not path.exists():
        if not is_open():
            raise BadAudio(f"{path.name}: the recording file was never created")
        time.sleep(poll)
    with open(path, "rb") as handle:
        layout = wait_for_layout(handle, is_open, poll, stall)
        channels = min(layout.channels, 2)
        process = decoder(["-f", layout.raw_format, "-ar", str(layout.sample_rate), "-ac", str(layout.channels),
                           "-i", "pipe:0"], channels, model.sample_rate, stdin=subprocess.PIPE)
        failures: list[BaseException] = []
        feeder = threading.Thread(target=_feed, args=(handle, process, is_open, poll, stall, failures),
                                  name=f"tail {path.name}", daemon=True)
        feeder.start()
        result = run_decoder(process, model, channels, path.name)
        feeder.join()
    if failures:
        raise failures[0]
    return result


def _feed(handle: IO[bytes], process: subprocess.Popen[bytes], is_open: Callable[[], bool], poll: float,
          stall: float, failures: list[BaseException]) -> None:
    assert process.stdin is not None
    try:
        tail(handle, process.stdin, is_open, poll, stall)
    except BaseException as exc:  # handed to the job's thread, which fails the transcript
        failures.append(exc)
    finally:
        try:
            process.stdin.close()
        except BrokenPipeError:
            pass


# --- Evaluation -------------------------------------------------------------------------

def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two token lists."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


@dataclass
class Score:
    name: str
    reference: str
    hypothesis: str
    word_errors: int
    words: int
    char_errors: int
    chars: int

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.chars, 1)


def score(name: str, reference: str, hypothesis: str) -> Score:
    """WER on whitespace tokens, CER on characters with whitespace removed (CJK has no spaces)."""
    ref_chars, hyp_chars = list("".join(reference.split())), list("".join(hypothesis.split()))
    return Score(name, reference, hypothesis, edit_distance(reference.split(), hypothesis.split()),
                 len(reference.split()), edit_distance(ref_chars, hyp_chars), len(ref_chars))


def evaluate(folder: str | Path, model: SpeechModel) -> list[Score]:
    """Score the model on every audio file in ``folder`` that has a reference ``<stem>.txt``."""
    scores = []
    for reference in sorted(Path(folder).glob("*.txt")):
        audio = sorted(p for p in reference.parent.iterdir() if p.stem == reference.stem and p != reference)
        if not audio:
            continue
        result = transcribe_file(audio[0], model)
        hypothesis = " ".join(s.text for s in result.segments)
        scores.append(score(audio[0].name, reference.read_text(encoding="utf-8").strip(), hypothesis))
    return scores
