"""Fixtures of the telephony tests: settings on fixed test ports, the local PBX, the service.

Ports (127.0.0.1): PBX 5160, Hotline 5162, sipp 5170, baresip 5180, linphone 5190.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config import Settings, load_settings
from telephony.pbx import LocalPbx, hotline_extensions
from telephony.service import HotlineService
from tests.telephony import peers
from workers.connection import close_redis

SIP_TOML = f"""
[sip]
pbx_port = {peers.PBX_PORT}
local_port = {peers.HOTLINE_PORT}
rtp_port_min = {peers.HOTLINE_RTP[0]}
rtp_port_max = {peers.HOTLINE_RTP[1]}
answer_delay = 0.3
no_audio_timeout = 30.0
register_expires = 60

[prompts]
greeting = "您好"
recording_notice = "录音"
closing = "再见"
"""


@pytest.fixture
def sip_settings(migrated_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """Settings of a fresh installation on the test ports, with short prompts; database migrated."""
    Path(migrated_env["HOTLINE_CONFIG"]).write_text(SIP_TOML, encoding="utf-8")
    for key, value in migrated_env.items():
        monkeypatch.setenv(key, value)
    loaded = load_settings()
    yield loaded
    close_redis(loaded)


@pytest.fixture
def pbx(sip_settings: Settings) -> Iterator[LocalPbx]:
    """The local Kamailio on the test port with the hotline extension(s) and extension 2000/secret."""
    server = LocalPbx.from_settings(sip_settings)
    server.start(hotline_extensions(sip_settings) + [("2000", pbx_ha1(sip_settings, "2000", "secret"))])
    yield server
    server.stop()


def pbx_ha1(settings: Settings, extension: str, password: str) -> str:
    from models.accounts import sip_ha1

    return sip_ha1(extension, settings.sip.realm, password)


@pytest.fixture
def start_service(sip_settings: Settings) -> Iterator[Callable[..., HotlineService]]:
    """Start ``hotline sip`` in this process (own local PBX) with some ``[sip]`` settings changed."""
    started: list[HotlineService] = []

    def start(**sip_changes: object) -> HotlineService:
        for key, value in sip_changes.items():
            setattr(sip_settings.sip, key, value)
        running = HotlineService(sip_settings)
        started.append(running)
        assert running.start(register_timeout=5.0), "the hotline number did not register at the local PBX"
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def service(start_service: Callable[..., HotlineService]) -> HotlineService:
    return start_service()


@pytest.fixture
def sipp_dir(tmp_path: Path, caller_speech: Path) -> Path:
    """sipp's working directory with the caller's speech as raw μ-law and A-law (caller.ul/.al)."""
    workdir = tmp_path / "sipp"
    workdir.mkdir()
    for encoding, name in (("mu-law", "caller.ul"), ("a-law", "caller.al")):
        subprocess.run([peers.binary("sox"), str(caller_speech), "-t", "raw", "-e", encoding, "-r", "8000",
                        "-c", "1", str(workdir / name)], check=True)
    return workdir


def run_sipp(scenario: str, workdir: Path, *, pause_ms: int = 1000, timeout: float = 130, **kwargs: object) -> str:
    """Run sipp to completion; fails the test unless sipp reports success. Returns its -trace_logs log.

    Waited for as long as sipp's own ``-timeout`` (120 s): on a loaded CI machine a scenario that sipp
    completed successfully outlasted a 60 s wait (its retransmissions)."""
    peer = peers.sipp(scenario, workdir, extra=["-d", str(pause_ms), "-trace_logs"], **kwargs)  # type: ignore[arg-type]
    try:
        code = peer.wait(timeout)
    finally:
        peer.stop()
    logs = "".join(p.read_text(errors="replace") for p in workdir.glob(f"{scenario}_*_logs.log"))
    errors = "".join(p.read_text(errors="replace") for p in workdir.glob(f"{scenario}_*_errors.log"))
    assert code == 0, f"sipp {scenario} failed ({code}):\n{peer.output()[-3000:]}\n{errors[-3000:]}"
    return logs


@pytest.fixture
def caller_speech(tmp_path: Path) -> Path:
    """Six seconds of English speech with a 1.5 s silence in the middle, 8 kHz mono."""
    return peers.speech_wav("Hello, my washing machine stopped working yesterday. It makes a loud noise "
                            "and the door will not open.", tmp_path / "speech.wav", gap_seconds=1.5,
                            pad_seconds=0.5)
