"""Real SIP peers for the telephony tests: baresip, linphonec and sipp, plus audio helpers.

Every peer runs as a child process on fixed 127.0.0.1 ports with a bounded lifetime and is
stopped by its pid. A missing binary raises FileNotFoundError: the test fails, never skips.
"""

from __future__ import annotations

import json
import os
import socket
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np

from hotline.processes import stop_process
from tests.telephony.audio_checks import envelope, read_wav

HOST = "127.0.0.1"
PBX_PORT = 5160
HOTLINE_PORT = 5162
SIPP_PORT = 5170
BARESIP_PORT = 5180
LINPHONE_PORT = 5190
SIPP_MEDIA_PORT = 6000
BARESIP_RTP = (31000, 31100)
CONTROL_OFFSET = 2000  # baresip's ctrl_tcp listens on its SIP port + 2000 (7180 …)
LINPHONE_RTP = (32000, 32100)
HOTLINE_RTP = (21000, 21999)
CALLER_NUMBER = "13800138000"  # a Chinese mobile number: the call log stores +8613800138000
SIPP_DIR = Path(__file__).with_name("sipp")


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed: the SIP tests need it (see shared/sip-notes.md)")
    return path


class Peer:
    """A child process with a log file, stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self, args: list[str], log_path: Path, *, stdin: int | None = subprocess.DEVNULL,
                 cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=stdin, cwd=cwd,
                                        env={**os.environ, **env} if env else None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 3.0) -> None:
        stop_process(self.process, timeout)
        self._log.close()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


# --- baresip ------------------------------------------------------------------------------------

def baresip_caller(workdir: Path, source_wav: Path, target: str, *, user: str = CALLER_NUMBER,
                   codecs: str = "PCMU,PCMA", lifetime: int = 60, port: int = BARESIP_PORT) -> Peer:
    """baresip dialling ``target``, playing ``source_wav`` (8 kHz); the end of the file hangs up.

    What it hears goes to ``dump-*-dec.wav`` in ``workdir``. Several run at once on other even ``port``s
    (5180-5188: baresip takes the next port too, for TLS; each takes its own hundred RTP ports).
    """
    account = f"<sip:{user}@{HOST}>;regint=0;audio_codecs={codecs}"
    return _baresip(workdir, source_wav, account, ["-e", f"/dial {target}"], lifetime, port=port)


def baresip_callee(workdir: Path, source_wav: Path, *, user: str = "2000", password: str = "secret",
                   lifetime: int = 120, answer: bool = True, port: int = BARESIP_PORT) -> Peer:
    """baresip registered at the PBX as ``user``, answering at once (or only ringing); what it hears goes to dump-*-dec.wav."""
    mode = "auto" if answer else "manual"
    account = f"<sip:{user}@{HOST}:{PBX_PORT}>;auth_pass={password};regint=60;answermode={mode};audio_codecs=PCMU,PCMA"
    return _baresip(workdir, source_wav, account, [], lifetime, port=port)


def _baresip(workdir: Path, source_wav: Path, account: str, args: list[str], lifetime: int, *,
             port: int = BARESIP_PORT) -> Peer:
    workdir.mkdir(parents=True, exist_ok=True)
    rtp_low = BARESIP_RTP[0] + (port - BARESIP_PORT) * 100
    (workdir / "config").write_text(
        f"""poll_method epoll
sip_listen {HOST}:{port}
net_interface {HOST}
audio_source aufile,{source_wav}
audio_player aufile,/dev/null
ausrc_srate 8000
auplay_srate 8000
rtp_ports {rtp_low}-{rtp_low + 99}
ctrl_tcp_listen {HOST}:{port + CONTROL_OFFSET}
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module sndfile.so
module ctrl_tcp.so
module_tmp uuid.so
module_tmp account.so
module_app menu.so
snd_path {workdir}
""")
    (workdir / "accounts").write_text(account + "\n")
    return Peer([binary("baresip"), "-f", str(workdir), *args, "-t", str(lifetime)], workdir / "baresip.log",
                cwd=workdir)


def baresip_command(sip_port: int, command: str, params: str = "") -> str:
    """Send a menu command (``hold``, ``resume``, ``hangup``, ``sndcode 4`` …) to the baresip on ``sip_port``; its reply.

    Events (call state, RTCP) share the connection and may come first, several to one read: the
    reply is the netstring marked ``"response": true``.
    """
    body = json.dumps({"command": command, "params": params, "token": "test"}).encode()
    with socket.create_connection((HOST, sip_port + CONTROL_OFFSET), timeout=5) as conn:
        conn.sendall(b"%d:%s," % (len(body), body))
        received = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return received.decode(errors="replace")
            received += chunk
            for message in _netstrings(received):
                if '"response":true' in message.replace(" ", ""):
                    return message


def _netstrings(data: bytes) -> list[str]:
    messages = []
    while b":" in data:
        length, _, rest = data.partition(b":")
        if not length.isdigit() or len(rest) < int(length) + 1:
            break
        messages.append(rest[:int(length)].decode(errors="replace"))
        data = rest[int(length) + 1:]
    return messages


# --- sipp ---------------------------------------------------------------------------------------

def sipp(scenario: str, workdir: Path, *, service: str = "1000", calls: int = 1, rate: float = 1.0,
         limit: int | None = None, extra: list[str] | None = None, port: int = SIPP_PORT,
         media_port: int = SIPP_MEDIA_PORT) -> Peer:
    """sipp running ``tests/telephony/sipp/<scenario>.xml`` against the PBX, ``calls`` calls."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [binary("sipp"), f"{HOST}:{PBX_PORT}", "-sf", str(SIPP_DIR / f"{scenario}.xml"), "-s", service,
            "-i", HOST, "-p", str(port), "-mi", HOST, "-mp", str(media_port), "-m", str(calls), "-r", str(rate),
            "-timeout", "120", "-timeout_error", "-nostdin", "-trace_err", "-trace_stat", "-fd", "1"]
    if limit:
        args += ["-l", str(limit)]
    return Peer(args + (extra or []), workdir / f"sipp-{scenario}.log", cwd=workdir)


# --- linphone -----------------------------------------------------------------------------------

class Linphone(Peer):
    """linphonec fed commands through a FIFO on stdin (kept open: at EOF it spins)."""

    def __init__(self, workdir: Path, source_wav: Path, *, user: str = "13900139000",
                 password: str | None = None, dtmf_info: bool = False) -> None:
        """A caller; with ``password``, also registered at the PBX as extension ``user`` (a callee).

        Digits typed during a call go out as RFC 2833 events, or as SIP INFO with ``dtmf_info``.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        # Without its data directory the core never reaches "on": it calls out but answers every
        # incoming INVITE with 503 and never registers.
        home = workdir / "home"
        (home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        rc = workdir / "linphonerc"
        account = f"""[proxy_0]
reg_proxy=<sip:{HOST}:{PBX_PORT}>
reg_identity=sip:{user}@{HOST}:{PBX_PORT}
reg_expires=60
reg_sendregister=1
[auth_info_0]
username={user}
passwd={password}
""" if password else ""
        rc.write_text(account + f"""[sip]
sip_port={LINPHONE_PORT}
use_ipv6=0
sip_tcp_port=-1
sip_tls_port=-1
bind_address={HOST}
default_proxy={0 if password else -1}
use_info={int(dtmf_info)}
use_rfc2833={int(not dtmf_info)}
[rtp]
audio_rtp_port={LINPHONE_RTP[0]}-{LINPHONE_RTP[1]}
bind_address={HOST}
[sound]
echocancellation=0
[misc]
user_agent_name=linphone-test
""")
        fifo = workdir / "stdin"
        if not fifo.exists():
            os.mkfifo(fifo)
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self._writer = os.open(fifo, os.O_WRONLY)
        os.set_blocking(reader, True)
        super().__init__([binary("linphonec"), "-c", str(rc), "-d", "0"], workdir / "linphonec.log", stdin=reader,
                         cwd=workdir, env={"HOME": str(home)})
        os.close(reader)
        self.source_wav = source_wav
        self.heard = workdir / "heard.wav"
        # linphonec 5.1 opens no SIP socket from sip_port in its config; this command does.
        self.command(f"ports sip {LINPHONE_PORT}")
        self.command("soundcard use files")
        self.command(f"play {source_wav}")
        self.command(f"record {self.heard}")
        self.user = user

    def command(self, line: str) -> None:
        os.write(self._writer, (line + "\n").encode())

    def call(self, uri: str) -> None:
        self.command(f"call {uri}")

    def stop(self, timeout: float = 3.0) -> None:
        try:
            self.command("terminate")
            self.command("quit")
            self.process.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        super().stop(timeout)
        os.close(self._writer)


# --- audio --------------------------------------------------------------------------------------

def speech_wav(text: str, path: Path, *, voice: str = "en", pad_seconds: float = 0.0,
               gap_seconds: float = 0.0) -> Path:
    """espeak-ng speech as 8 kHz 16-bit mono; ``gap_seconds`` of silence between two halves of it."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run([binary("espeak-ng"), "-v", voice, "-s", "150", "-w", str(raw), text], check=True,
                   capture_output=True)
    subprocess.run([binary("sox"), str(raw), "-r", "8000", "-c", "1", "-b", "16", str(path)], check=True,
                   capture_output=True)
    raw.unlink()
    if gap_seconds or pad_seconds:
        samples = read_wav(path)[0][:, 0]
        half = len(samples) // 2
        gap = np.zeros(int(gap_seconds * 8000), dtype=np.int16)
        pad = np.zeros(int(pad_seconds * 8000), dtype=np.int16)
        pieces = [samples[:half], gap, samples[half:], pad] if gap_seconds else [samples, pad]
        write_wav(path, np.concatenate(pieces))
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype(np.int16).tobytes())


def silent_runs(samples: np.ndarray, threshold: float = 100.0, min_seconds: float = 0.5) -> list[tuple[float, float]]:
    """(start, length) in seconds of stretches whose 20 ms RMS stays under ``threshold``."""
    quiet = envelope(samples) < threshold
    runs, start = [], None
    for i, q in enumerate(list(quiet) + [False]):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if (i - start) * 0.02 >= min_seconds:
                runs.append((start * 0.02, (i - start) * 0.02))
            start = None
    return runs


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
