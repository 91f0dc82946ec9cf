"""`hotline demo --once`: real baresip customers call, Hotline answers, records and tickets every call.

Ports of their own (PBX 5164, Hotline 5166, phones 5172–5179, web 18090), so these tests never
meet the telephony tests' peers. A missing baresip, espeak-ng or sox fails the demo, never skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from config import Settings, load_settings
from models.call import Call, CallDirection, CallOutcome, HangupParty
from models.db import session_scope
from models.recording import RecordingState
from telephony.prompts import PromptLibrary
from tests.telephony.audio_checks import assert_on_channel, read_wav

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


def demo(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotline", "demo", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def welcome(settings: Settings) -> np.ndarray:
    """What Hotline says first on every call: the greeting, then the recording notice (from the prompt cache)."""
    prompts = PromptLibrary(settings)
    return np.frombuffer(prompts.greeting() + prompts.recording_notice(), dtype=np.int16)


def customer_speech(settings: Settings, e164: str) -> np.ndarray:
    """What the demo's customer with this number said: the WAV its softphone played."""
    return read_wav(settings.home / "demo" / f"{e164[3:]}.wav")[0][:, 0]


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
            assert call.answered_at is not None and call.ended_at is not None
            # The end of the customer's speech file hangs up: the customer left the queue.
            assert call.outcome is CallOutcome.ABANDONED and call.hangup_by is HangupParty.CUSTOMER
            recording = call.recording
            assert recording is not None and recording.state is RecordingState.COMPLETE
            samples, rate = read_wav(recording.path)
            assert rate == 8000 and samples.shape[1] == 2
            # The customer's whole sentence, pause and words after it on the left only; the greeting
            # and notice the customer heard on the right only.
            assert_on_channel(customer_speech(settings, call.caller_id), samples, 0)
            assert_on_channel(welcome(settings), samples, 1)
            assert call.ticket is not None and call.ticket.phone == call.caller_id
        assert len({call.ticket_id for call in calls}) == len(CUSTOMERS)  # two customers, two tickets
    assert leftovers(settings.home) == []


@pytest.mark.sip
def test_demo_once_exits_1_when_a_call_is_not_recorded(demo_env, tmp_path: Path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = Path(demo_env["HOTLINE_CONFIG"])
    config.write_text(config.read_text() + f'\n[recording]\ndirectory = "{blocker / "recordings"}"\n')
    result = demo(demo_env, "--once", "--customers", "1", "--phone-ports", PHONE_PORT)
    output = result.stdout
    assert result.returncode == 1, f"{output[-4000:]}\n{result.stderr[-4000:]}"
    assert f"客户 {CUSTOMERS[0][3:]} 来电 → 已接听" in output  # answered all the same
    assert "未录音!" in output and "0/1 通来电已接听并录音" in output
    assert leftovers(load_settings().home) == []


def test_demo_fails_without_its_softphone(demo_env):
    result = demo({**demo_env, "PATH": str(Path(sys.executable).parent)}, "--once", timeout=60)
    assert result.returncode == 1
    assert "the demo needs baresip" in result.stderr
