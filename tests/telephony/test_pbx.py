"""The local Kamailio: generated config, digest auth per extension (REGISTER and INVITE), restarts."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from config import Settings
from models import agents as agent_rules
from models.accounts import add_user, sip_ha1
from models.agent import AgentState
from models.db import session_scope
from models.user import Role
from telephony import service as service_module
from telephony import sip
from telephony.pbx import LocalPbx, hotline_extensions, user_extensions
from telephony.service import HotlineService
from tests.telephony import peers

pytestmark = pytest.mark.sip

ANSWER_PORT = 40000  # the SDP's port: no media flows in these tests
AGENT_PORT = peers.BARESIP_PORT  # extension 2000's phone


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
    assert ("2001", sip_ha1("2001", sip_settings.sip.realm, "pw-li-2001")) in user_extensions(sip_settings)
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
        assert server.reload(hotline_extensions(sip_settings) + [("2002", sip_ha1("2002", "hotline", "x"))])
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


def phone(port: int, user: str | None = None, password: str = "") -> sip.Endpoint:
    """Our SIP endpoint on ``port``, registering ``user`` if given, answering every call at once."""
    ep = sip.Endpoint(local_ip=peers.HOST, local_port=port, pbx_host=peers.HOST, pbx_port=peers.PBX_PORT,
                      keepalive=0, retry_interval=60)
    if user:
        ep.add_account(user, password)
    ep.on_invite = lambda dialog: dialog.answer(ANSWER_PORT)
    return ep


@pytest.fixture
def callees(pbx: LocalPbx, sip_settings: Settings) -> Iterator[dict[str, sip.Endpoint]]:
    """The hotline number 1000 and the agent extension 2000 (password "secret"), registered and answering."""
    registered = {"1000": phone(peers.HOTLINE_PORT, "1000", sip_settings.sip.hotline_password),
                  "2000": phone(AGENT_PORT, "2000", "secret")}
    for ep in registered.values():
        ep.start()
    try:
        for user, ep in registered.items():
            assert ep.wait_registered(3), ep.accounts[user].last_error
        yield registered
    finally:
        for ep in registered.values():
            ep.stop()


def call(target: str, *, as_user: str, password: str | None = None) -> sip.Dialog:
    """Dial ``target`` through the PBX as ``as_user`` (with ``password``, if any, for a challenge); hang up."""
    caller = phone(peers.SIPP_PORT, as_user if password is not None else None, password or "")
    caller.start()
    try:
        dialog = caller.dial(target, ANSWER_PORT, from_user=as_user)
        if dialog.wait_answered(5):
            dialog.hangup()
        assert dialog.ended.wait(5), f"no final answer to the INVITE to {target} (status {dialog.status})"
        return dialog
    finally:
        caller.stop(unregister=False)


def test_an_extensions_invite_is_challenged_and_needs_its_password(callees: dict[str, sip.Endpoint]) -> None:
    assert call("1000", as_user="2000").status == 407  # no credentials: challenged, not relayed
    assert call("1000", as_user="2000", password="wrong").status == 407
    assert callees["1000"].dialogs == {}
    answered = call("1000", as_user="2000", password="secret")
    assert answered.status == 200 and answered.end_reason is sip.EndReason.LOCAL_BYE
    [seen] = callees["1000"].dialogs.values()
    assert seen.caller == "2000" and seen.callee == "1000"


def test_an_extension_cannot_call_in_anothers_name(callees: dict[str, sip.Endpoint]) -> None:
    caller = phone(peers.SIPP_PORT, "2000", "secret")
    caller.start()
    try:
        dialog = caller.dial("2000", ANSWER_PORT, from_user="1000")  # From the hotline number, 2000's credentials
        assert dialog.ended.wait(5) and dialog.status == 403
        assert callees["2000"].dialogs == {}
    finally:
        caller.stop(unregister=False)


def test_a_stranger_reaches_the_hotline_numbers_only(callees: dict[str, sip.Endpoint]) -> None:
    assert call("2000", as_user="13700137000").status == 403  # an agent's extension, registered
    assert call("9999", as_user="13700137000").status == 403  # nothing there either
    assert call("sip:2000@example.org", as_user="13700137000").status == 403  # no relaying elsewhere
    assert callees["2000"].dialogs == {}
    assert call("1000", as_user="13700137000").status == 200


def test_hotline_number_dials_an_agent_with_its_digest(callees: dict[str, sip.Endpoint]) -> None:
    dialog = callees["1000"].dial("2000", ANSWER_PORT)  # challenged with 407, retried with credentials
    assert dialog.wait_answered(5), f"status {dialog.status}"
    [seen] = callees["2000"].dialogs.values()
    assert seen.caller == "1000"
    dialog.hangup()


def test_registered_lists_the_extensions_registered_now(sip_settings: Settings) -> None:
    add_agent(sip_settings, "li", "2001", "pw-li-2001")
    server = LocalPbx.from_settings(sip_settings)
    server.start(hotline_extensions(sip_settings) + user_extensions(sip_settings))
    try:
        assert server.registered() == set()
        ep = sip.Endpoint(local_ip=peers.HOST, local_port=peers.SIPP_PORT, pbx_host=peers.HOST,
                          pbx_port=peers.PBX_PORT, keepalive=0)
        ep.add_account("2001", "pw-li-2001")
        ep.start()
        try:
            assert ep.wait_registered(2)
            assert server.registered() == {"2001"}
        finally:
            ep.stop()  # unregisters
        assert server.registered() == set()
    finally:
        server.stop()
    assert server.registered() is None


def test_an_agent_whose_phone_is_not_registered_is_logged_out(
        start_service: Callable[..., HotlineService], sip_settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "USERS_POLL_SECONDS", 0.5)
    sip_settings.queues.unregistered_grace = 1.0
    add_agent(sip_settings, "li", "2001", "pw-li-2001")
    with session_scope(sip_settings) as session:
        agent_rules.log_in(session, agent_rules.agent_named(session, "li"), source="test")
    start_service()

    def state() -> tuple[AgentState, str]:
        with session_scope(sip_settings) as session:
            agent = agent_rules.agent_named(session, "li")
            return agent.state, agent.reason

    assert peers.wait_for(lambda: state()[0] is AgentState.LOGGED_OUT, 10)
    assert state()[1] == agent_rules.UNREGISTERED_REASON
