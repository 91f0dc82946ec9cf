"""``hotline agent state|list``: an agent chooses available, paused or logged out; the agents' list."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from click.testing import CliRunner

from hotline.cli import main
from models.accounts import add_user
from models.agent import AgentEvent
from models.agents import agent_named, offer
from models.db import session_scope
from models.user import Role


@pytest.fixture
def staff(settings):
    with session_scope(settings) as session:
        add_user(session, "zhang", Role.AGENT, "agent-pass-1", realm=settings.sip.realm, extension="1001",
                 skills=["粤语:3", "空调"])
        add_user(session, "wang", Role.SUPERVISOR, "agent-pass-1", realm=settings.sip.realm)


def hotline(cli: CliRunner, *args: str):
    return cli.invoke(main, list(args))


def agents(cli: CliRunner) -> dict[str, dict[str, object]]:
    result = hotline(cli, "agent", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.output)}


def test_available_paused_logged_out(settings, cli, staff):
    ready = hotline(cli, "agent", "state", "zhang", "available")
    assert (ready.exit_code, ready.output) == (0, "zhang is available\n")
    paused = hotline(cli, "agent", "state", "zhang", "paused", "--reason", "午休")
    assert (paused.exit_code, paused.output) == (0, "zhang is paused (午休)\n")
    row = agents(cli)["zhang"]
    assert (row["extension"], row["state"], row["reason"], row["skills"], row["call_id"]) == \
        ("1001", "paused", "午休", ["粤语:3", "空调"], None)
    assert datetime.fromisoformat(row["since"]).utcoffset().total_seconds() == 0
    out = hotline(cli, "agent", "state", "zhang", "logged_out")
    assert (out.exit_code, out.output) == (0, "zhang is logged_out\n")
    with session_scope(settings) as session:
        trail = [(e.state.value, e.reason, e.source) for e in session.query(AgentEvent).order_by(AgentEvent.id)]
    assert trail == [("available", "", "cli"), ("paused", "午休", "cli"), ("logged_out", "", "cli")]


def test_choosing_the_state_one_is_in_is_harmless(cli, staff):
    for _ in range(2):
        assert hotline(cli, "agent", "state", "zhang", "logged_out").output == "zhang is logged_out\n"
        assert hotline(cli, "agent", "state", "zhang", "available").output == "zhang is available\n"


@pytest.mark.parametrize("args,message", [
    (("nobody", "available"), "Error: no user 'nobody'"),
    (("wang", "available"), "Error: wang has no extension to ring: give them one to take calls"),
])
def test_clear_errors_exit_1(cli, staff, args, message):
    result = hotline(cli, "agent", "state", *args)
    assert (result.exit_code, result.output) == (1, message + "\n")
    assert "wang" not in agents(cli)  # a refused state leaves no agent row behind


def test_an_agent_on_a_call_cannot_pause(settings, cli, staff):
    hotline(cli, "agent", "state", "zhang", "available")
    with session_scope(settings) as session:
        offer(session, agent_named(session, "zhang"), "call-1")
    result = hotline(cli, "agent", "state", "zhang", "paused", "--reason", "午休")
    assert (result.exit_code, result.output) == (1, "Error: zhang is ringing: wait until the call ends\n")
    assert agents(cli)["zhang"]["state"] == "ringing" and agents(cli)["zhang"]["call_id"] == "call-1"


def test_only_a_person_s_states_can_be_chosen(cli, staff):
    result = hotline(cli, "agent", "state", "zhang", "on_call")
    assert result.exit_code == 2 and "'on_call' is not one of 'available', 'logged_out', 'paused'" in result.output


def test_a_user_without_an_extension_may_pause_and_the_list_shows_everyone_by_name(cli, staff):
    assert hotline(cli, "agent", "state", "wang", "paused", "--reason", "培训").exit_code == 0
    hotline(cli, "agent", "state", "zhang", "available")
    assert list(agents(cli)) == ["wang", "zhang"]
    lines = hotline(cli, "agent", "list").output.splitlines()
    assert lines[0].split()[:4] == ["wang", "-", "paused", "(培训)"] and lines[0].endswith("  -")
    assert lines[1].split()[:3] == ["zhang", "1001", "available"] and lines[1].endswith("粤语:3, 空调")


def test_no_agents_yet(cli):
    assert agents(cli) == {}
    assert hotline(cli, "agent", "list").output == \
        "no agents yet: `hotline agent state NAME available` makes a user with an extension one\n"
