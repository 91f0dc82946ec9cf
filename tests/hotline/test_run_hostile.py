"""`hotline run` after hostile SIP: Ctrl-C still stops every process, the local PBX included.

Before the SIP package checked what it reads, a BYE towards a Contact port beyond 65535 killed a
call thread, left its call open and broke shutdown (Kamailio stayed running).
"""

from __future__ import annotations

import pytest

from config import Settings
from tests.hotline.test_supervisor import (  # noqa: F401  (fixtures)
    SERVICES, children, ctrl_c, left_behind, running, supervisor, system_output, wait_for,
)
from tests.telephony.sip.test_endpoint import SEEDS, Attacker, invite

pytestmark = pytest.mark.sip


def test_ctrl_c_after_hostile_sip_leaves_nothing_behind(supervisor, settings: Settings,  # type: ignore[no-untyped-def]  # noqa: F811
                                                        tmp_path) -> None:  # type: ignore[no-untyped-def]
    import psutil

    assert wait_for(lambda: set(children(supervisor.pid)) == SERVICES, 30), system_output(tmp_path)
    assert wait_for(lambda: "hotline sip: numbers" in system_output(tmp_path), 30), system_output(tmp_path)
    attacker = Attacker()
    try:
        hostile = [invite("h1", contact="<sip:x@127.0.0.1:99999>"), invite("h2", sdp="m=audio abc RTP/AVP 0\r\n"),
                   invite("h3"), *(seed.replace(b"seed", b"h4") for seed in SEEDS),
                   invite("h5", via="SIP/2.0/UDP127.0.0.1:5199;branch=z9hG4bK{id}")]
        for message in hostile * 20:
            attacker.send(message)
        assert attacker.statuses("h3") == [403], "an INVITE that bypassed the PBX was not refused"
    finally:
        attacker.close()
    services = children(supervisor.pid)
    descendants = psutil.Process(supervisor.pid).children(recursive=True)
    assert any(p.name() == "kamailio" for p in descendants), "no local PBX to check"
    assert ctrl_c(supervisor) == 0, system_output(tmp_path)
    assert running(descendants) == []
    assert left_behind(settings.home, {p.pid for p in services.values()}) == []
    assert "Traceback" not in system_output(tmp_path)
