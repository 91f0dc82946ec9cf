"""`hotline demo --once`: real baresip customers call, Hotline answers, records and tickets every call.

Ports of their own (PBX 5164, Hotline 5166, phones 5172–5179, web 18090), so these tests never
meet the telephony tests' peers. A missing baresip, espeak-ng or sox fails the demo, never skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import psutil
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from config import load_settings
from models.call import Call, CallDirection
from models.db import session_scope
from models.recording import RecordingState

DEMO_TOML = """
[sip]
pbx_port = 5164
local_port = 5166
rtp_port_min = 23000
rtp_port_max = 23999

[web]
port = 18090
"""
PHONE_PORT = "5172"
CUSTOMERS = ("+8613800138001", "+8613800138002")
SILENCE_RMS = 100.0  # 16-bit samples; the customers' espeak-ng speech is around 2000


def demo(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotline", "demo", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def channel_rms(path: Path) -> tuple[float, float]:
    """RMS of the left and right channels of a 16-bit stereo WAV (fails on anything else)."""
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2).astype(float)
    left, right = np.sqrt((samples ** 2).mean(axis=0))
    return float(left), float(right)


def leftovers(home: Path) -> list[str]:
    """Processes the demo started that still run: softphones and Kamailio work in its home."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] in ("baresip", "kamailio") and str(home) in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture
def demo_env(hotline_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    Path(hotline_env["HOTLINE_CONFIG"]).write_text(DEMO_TOML, encoding="utf-8")
    for key, value in hotline_env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **hotline_env}


@pytest.mark.sip
def test_demo_once_answers_records_and_tickets_every_call(demo_env):
    result = demo(demo_env, "--once", "--customers", "2", "--phone-ports", PHONE_PORT)
    output = result.stdout
    assert result.returncode == 0, f"{output[-4000:]}\n{result.stderr[-4000:]}"
    assert "admin user created: log in at http://127.0.0.1:18090/" in output
    assert "1801 已注册" in output and "1802 已注册" in output and "not bridged to agents yet" in output
    assert "2/2 通来电已接听并录音" in output and "http://127.0.0.1:18090/calls/" in output
    for number in CUSTOMERS:
        assert f"客户 {number[3:]} 来电 → 已接听" in output

    settings = load_settings()
    with session_scope(settings) as session:
        calls = session.scalars(select(Call).order_by(Call.id)
                                .options(selectinload(Call.recordings), selectinload(Call.ticket))).all()
        assert sorted(call.caller_id for call in calls) == list(CUSTOMERS)
        for call in calls:
            assert call.direction is CallDirection.INBOUND and call.callee == "1000"
            assert call.answered_at is not None and call.ended_at is not None and call.outcome is not None
            recording = call.recording
            assert recording is not None and recording.state is RecordingState.COMPLETE
            left, right = channel_rms(Path(recording.path))
            assert left > SILENCE_RMS, f"no customer speech on the left channel of {recording.path}: {left:.0f}"
            assert right > SILENCE_RMS, f"no greeting on the right channel of {recording.path}: {right:.0f}"
            assert call.ticket is not None and call.ticket.phone == call.caller_id
    assert leftovers(settings.home) == []


def test_demo_fails_without_its_softphone(demo_env):
    result = demo({**demo_env, "PATH": str(Path(sys.executable).parent)}, "--once", timeout=60)
    assert result.returncode == 1
    assert "the demo needs baresip" in result.stderr
