"""Staff-first callbacks with real softphones: the staff member's baresip rings first, then the customer's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import time as clock_time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from config import Settings
from models.accounts import add_user
from models.call import Call
from models.callback import AttemptOutcome, CallbackKind, CallbackState
from models.callbacks import dial_now, schedule
from models.db import session_scope
from models.user import Role, User
from telephony.service import HotlineService
from tests.telephony import peers
from tests.telephony.audio_checks import assert_on_channel, read_wav
from tests.telephony.test_survey import wait_callback
from workers.dispatch import enqueue_callback

pytestmark = pytest.mark.sip

STAFF, CUSTOMER = "1005", "2001"
STAFF_PORT, CUSTOMER_PORT = peers.BARESIP_PORT, peers.BARESIP_PORT + 2
PASSWORD = "phone-secret"
LEAD_SKIPPED = 12000  # samples: 1.5 s of the 4 s of silence before the staff member speaks


def spoken(text: str, path: Path, *, lead_seconds: float, pad_seconds: float) -> Path:
    """Speech after ``lead_seconds`` of silence (so all of it falls inside the bridged call), then silence."""
    peers.speech_wav(text, path, pad_seconds=pad_seconds)
    samples = read_wav(path)[0][:, 0]
    peers.write_wav(path, np.concatenate([np.zeros(int(lead_seconds * 8000), dtype=np.int16), samples]))
    return path


def test_staff_and_customer_hear_each_other_and_are_recorded(sip_settings: Settings, tmp_path: Path,
                                                             start_service: Callable[..., HotlineService]) -> None:
    sip_settings.callbacks.calling_hours_start = clock_time(0, 0)
    sip_settings.callbacks.calling_hours_end = clock_time(23, 59, 59)
    with session_scope(sip_settings) as session:
        staff_id = add_user(session, "wang", Role.REVISIT, PASSWORD, realm=sip_settings.sip.realm, extension=STAFF).id
        add_user(session, "customer", Role.AGENT, PASSWORD, realm=sip_settings.sip.realm, extension=CUSTOMER)
    service = start_service()
    staff_speech = spoken("Good morning, this is the service team calling back.", tmp_path / "staff.wav",
                          lead_seconds=4, pad_seconds=4)
    customer_speech = spoken("Oh hello, thank you for calling.", tmp_path / "customer.wav",
                             lead_seconds=1, pad_seconds=10)
    staff = peers.baresip_callee(tmp_path / "staff", staff_speech, user=STAFF, password=PASSWORD, port=STAFF_PORT)
    customer = peers.baresip_callee(tmp_path / "customer", customer_speech, user=CUSTOMER, password=PASSWORD,
                                    port=CUSTOMER_PORT)
    try:
        assert service.pbx is not None
        assert peers.wait_for(lambda: {STAFF, CUSTOMER} <= (service.pbx.registered() or set()), 20)
        with session_scope(sip_settings) as session:
            callback = schedule(session, sip_settings, kind=CallbackKind.CUSTOMER_REQUESTED, phone=CUSTOMER)
            callback_id, attempt = callback.id, dial_now(session, sip_settings, callback)
        enqueue_callback(sip_settings, callback_id, attempt, None, staff_id)
        done = wait_callback(sip_settings, callback_id, {CallbackState.DONE}, 45)  # the staff hang up at their WAV's end
    finally:
        staff.stop()
        customer.stop()
    [row] = done.attempt_rows
    assert row.outcome is AttemptOutcome.COMPLETED and row.staff_id == staff_id
    assert service.events.flush(10)
    with session_scope(sip_settings) as session:
        call = session.scalar(select(Call).where(Call.callback_id == callback_id))
        assert call is not None and call.agent_id == staff_id and call.caller_id == CUSTOMER
        path = call.recordings[0].path
        assert session.get_one(User, staff_id).extension == STAFF
    recording = read_wav(path)[0]
    assert_on_channel(read_wav(customer_speech)[0][:, 0], recording, 0)  # the customer on the left
    # The staff member's WAV started when they answered, before the customer did (and the recording began):
    # compared without its first second and a half, it starts after the recording.
    assert_on_channel(read_wav(staff_speech)[0][LEAD_SKIPPED:, 0], recording, 1)  # the staff member on the right
