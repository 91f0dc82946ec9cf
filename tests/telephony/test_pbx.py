"""The local Kamailio: generated config, digest auth per extension, restarts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from config import Settings
from models.accounts import add_user
from models.db import session_scope
from models.user import Role
from telephony import service as service_module
from telephony import sip
from telephony.pbx import LocalPbx, ha1, hotline_extensions, user_extensions
from telephony.service import HotlineService
from tests.telephony import peers

pytestmark = pytest.mark.sip


def register(extension: str, password: str, timeout: float = 2.0) -> tuple[bool, str]:
    ep = sip.Endpoint(local_ip=peers.HOST, local_port=peers.SIPP_PORT, pbx_host=peers.HOST, pbx_port=peers.PBX_PORT,
                      keepalive=0)
    account = ep.add_account(extension, password)
    ep.start()
    try:
        return ep.wait_registered(timeout), account.last_error
    finally:
        ep.stop()


def add_agent(settings: Settings, name: str, extension: str, password: str) -> None:
    with session_scope(settings) as session:
        add_user(session, name, Role.AGENT, password, realm=settings.sip.realm, extension=extension)


def test_users_extensions_register_with_their_own_password(sip_settings: Settings) -> None:
    add_agent(sip_settings, "li", "2001", "pw-li-2001")
    assert ("2001", ha1("2001", sip_settings.sip.realm, "pw-li-2001")) in user_extensions(sip_settings)
    server = LocalPbx.from_settings(sip_settings)
    server.start(hotline_extensions(sip_settings) + user_extensions(sip_settings))
    try:
        assert register("2001", "pw-li-2001") == (True, "")
        ok, error = register("2001", "wrong")
        assert not ok and error.startswith("401")
        ok, error = register("2999", "pw-li-2001")  # unknown extension
        assert not ok and error.startswith("401")
        assert register("1000", sip_settings.sip.hotline_password)[0]
    finally:
        server.stop()
    assert not server.pid_path.exists()


def test_reload_restarts_only_when_extensions_change(sip_settings: Settings) -> None:
    server = LocalPbx.from_settings(sip_settings)
    server.start(hotline_extensions(sip_settings))
    try:
        boot = server.boot_id
        assert not server.reload(hotline_extensions(sip_settings))
        assert server.reload(hotline_extensions(sip_settings) + [("2002", ha1("2002", "hotline", "x"))])
        assert server.boot_id != boot and server.running()
        assert register("2002", "x")[0]
    finally:
        server.stop()


def test_kamailio_left_by_a_killed_hotline_is_stopped_at_start(sip_settings: Settings) -> None:
    orphan = LocalPbx.from_settings(sip_settings)
    orphan.start(hotline_extensions(sip_settings))
    successor = LocalPbx.from_settings(sip_settings)  # as a restarted process would
    try:
        successor.start(hotline_extensions(sip_settings))
        assert orphan.process is not None and orphan.process.wait(5) is not None
        assert successor.running()
    finally:
        successor.stop()
        orphan.stop()


def test_new_user_can_register_while_the_service_runs(
        start_service: Callable[..., HotlineService], sip_settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "USERS_POLL_SECONDS", 0.5)
    running = start_service()
    assert not register("2003", "pw-2003-wang", timeout=1.0)[0]
    add_agent(sip_settings, "wang", "2003", "pw-2003-wang")
    assert peers.wait_for(lambda: register("2003", "pw-2003-wang", timeout=0.5)[0], 8)
    # the hotline number itself noticed the restart and registered again
    account = running.endpoint.accounts["1000"]
    assert peers.wait_for(lambda: account.registered and account.expires_at > 0, 5)
