"""An external company PBX (``[sip] pbx_host``) with several hotline numbers: Hotline starts no PBX of
its own, registers every number there and answers calls to each.

The company PBX is a Kamailio started here (``LocalPbx`` as a stand-in) on the PBX test port,
with a realm of its own, so the digest Hotline answers with must follow the PBX's challenge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from config import Settings
from models.accounts import sip_ha1
from models.call import Call, CallOutcome, CallState
from models.db import session_scope
from telephony.pbx import LocalPbx
from telephony.service import HotlineService
from tests.telephony import peers
from tests.telephony.conftest import run_sipp

pytestmark = pytest.mark.sip

NUMBERS = ["1000", "1001"]
COMPANY_REALM = "acme-pbx"


@pytest.fixture
def company_pbx(sip_settings: Settings, tmp_path: Path) -> Iterator[LocalPbx]:
    """The company's PBX: a Kamailio outside HOTLINE_HOME that knows both hotline numbers."""
    pbx = LocalPbx(tmp_path / "company-pbx", hotline_numbers=NUMBERS, host=peers.HOST, port=peers.PBX_PORT,
                   realm=COMPANY_REALM)
    pbx.start([(number, sip_ha1(number, COMPANY_REALM, sip_settings.sip.hotline_password)) for number in NUMBERS])
    yield pbx
    pbx.stop()


def kamailio_configs() -> list[str]:
    """The config file of every running Kamailio."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        command = process.info["cmdline"] or []
        if process.info["name"] == "kamailio" and "-f" in command:
            found.append(command[command.index("-f") + 1])
    return found


def ended_calls(settings: Settings) -> list[tuple[str, bool, CallOutcome | None, bool, bool]]:
    """(callee, answered, outcome, recorded, ticketed) of each ended call, oldest first."""
    with session_scope(settings) as session:
        query = select(Call).where(Call.state == CallState.ENDED).order_by(Call.id)
        return [(call.callee, call.answered_at is not None, call.outcome, call.recording is not None,
                 call.ticket is not None) for call in session.scalars(query)]


def test_every_hotline_number_registers_at_the_company_pbx_and_is_answered(
        company_pbx: LocalPbx, start_service: Callable[..., HotlineService], sip_settings: Settings,
        sipp_dir: Path) -> None:
    service = start_service(pbx_host=peers.HOST, hotline_numbers=NUMBERS)  # fails unless both registered

    assert service.pbx is None and not sip_settings.uses_local_pbx
    # Only Kamailios of this installation count: another test's may still be shutting down.
    ours = [config for config in kamailio_configs() if config.startswith(str(sip_settings.home))]
    assert str(company_pbx.config_path) in kamailio_configs() and not ours, "Hotline started a PBX of its own"
    assert not (sip_settings.home / "pbx").exists()
    for number in NUMBERS:
        run_sipp("uac_bye", sipp_dir, service=number, pause_ms=1000)  # fails unless answered
    assert peers.wait_for(lambda: len(ended_calls(sip_settings)) == len(NUMBERS), 20), ended_calls(sip_settings)
    assert ended_calls(sip_settings) == [(number, True, CallOutcome.ABANDONED, True, True) for number in NUMBERS]


def test_a_number_the_company_pbx_does_not_know_is_reported_not_registered(
        company_pbx: LocalPbx, start_service: Callable[..., HotlineService], sip_settings: Settings) -> None:
    from models.alarm import Alarm, AlarmKind

    sip_settings.sip.pbx_host = peers.HOST
    sip_settings.sip.hotline_numbers = [*NUMBERS, "1002"]
    service = HotlineService(sip_settings)
    try:
        assert not service.start(register_timeout=3.0)
        accounts = service.endpoint.accounts
        assert accounts["1000"].registered and accounts["1001"].registered and not accounts["1002"].registered

        def alarms() -> list[str]:
            with session_scope(sip_settings) as session:
                return list(session.scalars(select(Alarm.message).where(Alarm.kind == AlarmKind.REGISTRATION_FAILED)))

        assert peers.wait_for(lambda: alarms(), 10), "no alarm for the number that cannot register"
        assert all("1002" in message for message in alarms()), alarms()
    finally:
        service.stop()
