"""``hotline queue add|set|list|status``: queues managed from the command line, who waits in them now."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from hotline.cli import main
from models.accounts import add_user
from models.agents import agent_named, answer, log_in, offer
from models.base import utcnow
from models.board import queue_status
from models.call import CallState
from models.calllog import log_inbound, mark_bridged, mark_state
from models.db import session_scope
from models.queues import queue_named
from models.user import Role

FULL = ["--number", "1000", "--number", "1001", "--skill", "空调", "--skill", "粤语:2", "--display-name", "技术咨询",
        "--wrap-up", "10", "--ring-timeout", "20", "--announce", "30", "--max-wait", "300", "--menu-key", "1",
        "--language", "yue"]


def hotline(cli: CliRunner, *args: str):
    return cli.invoke(main, list(args))


def listed(cli: CliRunner) -> dict[str, dict[str, object]]:
    result = hotline(cli, "queue", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.output)}


def test_add_with_every_option_then_list(cli):
    assert hotline(cli, "queue", "add", "售后服务").exit_code == 0
    added = hotline(cli, "queue", "add", "技术支持", *FULL, "--overflow", "售后服务")
    assert added.exit_code == 0, added.output
    assert added.output == ("added queue 技术支持 (1000, 1001 key 1) skills 空调, 粤语:2: ring 20 s, wrap-up 10 s, "
                            "announce 30 s, max wait 300 s → 售后服务\n")
    rows = listed(cli)
    assert list(rows) == ["售后服务", "技术支持"]
    assert rows["技术支持"] == {"name": "技术支持", "display_name": "技术咨询", "numbers": ["1000", "1001"],
                            "skills": ["空调", "粤语:2"], "menu_key": "1", "language": "yue",
                            "ring_timeout_s": 20.0, "wrap_up_s": 10.0, "announce_s": 30.0, "max_wait_s": 300.0,
                            "virtual_hold_after_s": 0.0, "overflow": "售后服务"}
    # Timers not given are the [queues] defaults.
    assert rows["售后服务"] == {"name": "售后服务", "display_name": "售后服务", "numbers": [], "skills": [],
                            "menu_key": None, "language": None, "ring_timeout_s": 15.0, "wrap_up_s": 30.0,
                            "announce_s": 45.0, "max_wait_s": 0.0, "virtual_hold_after_s": 0.0,
                            "overflow": None}
    text = hotline(cli, "queue", "list")
    assert text.output.splitlines() == [
        "售后服务 (no number): ring 15 s, wrap-up 30 s, announce 45 s, max wait 0 s",
        "技术支持 (1000, 1001 key 1) skills 空调, 粤语:2: ring 20 s, wrap-up 10 s, announce 30 s, max wait 300 s → 售后服务",
    ]


def test_virtual_hold_is_offered_after_the_seconds_set(cli):
    assert hotline(cli, "queue", "add", "售后服务", "--virtual-hold-after", "60").exit_code == 0
    assert listed(cli)["售后服务"]["virtual_hold_after_s"] == 60.0
    assert hotline(cli, "queue", "list").output.endswith(", virtual hold after 60 s\n")
    assert hotline(cli, "queue", "set", "售后服务", "--virtual-hold-after", "").exit_code == 0
    assert listed(cli)["售后服务"]["virtual_hold_after_s"] == 0.0  # the [queues] default: never
    assert hotline(cli, "queue", "set", "售后服务", "--virtual-hold-after", "-1").exit_code != 0


def test_set_changes_only_the_options_given(cli):
    hotline(cli, "queue", "add", "售后服务")
    assert hotline(cli, "queue", "add", "技术支持", *FULL, "--overflow", "售后服务").exit_code == 0
    changed = hotline(cli, "queue", "set", "技术支持", "--ring-timeout", "25", "--number", "1002")
    assert changed.exit_code == 0, changed.output
    assert changed.output.startswith("changed queue 技术支持 (1002 key 1) skills 空调, 粤语:2: ring 25 s, wrap-up 10 s")
    row = listed(cli)["技术支持"]
    assert (row["ring_timeout_s"], row["numbers"], row["wrap_up_s"], row["skills"]) == (25.0, ["1002"], 10.0,
                                                                                      ["空调", "粤语:2"])
    assert (row["menu_key"], row["language"], row["overflow"], row["display_name"]) == ("1", "yue", "售后服务", "技术咨询")


def test_empty_values_clear_overflow_menu_key_language_and_timers(cli):
    hotline(cli, "queue", "add", "售后服务")
    hotline(cli, "queue", "add", "技术支持", *FULL, "--overflow", "售后服务")
    cleared = hotline(cli, "queue", "set", "技术支持", "--overflow", "", "--menu-key", "", "--language", "",
                      "--wrap-up", "", "--max-wait", "0")
    assert cleared.exit_code == 0, cleared.output
    row = listed(cli)["技术支持"]
    assert (row["overflow"], row["menu_key"], row["language"]) == (None, None, None)
    assert (row["wrap_up_s"], row["max_wait_s"], row["ring_timeout_s"]) == (30.0, 0.0, 20.0)  # default, own 0, kept


@pytest.mark.parametrize("args,message", [
    (("queue", "add", "呼叫中心"), "Error: queue '呼叫中心' exists already"),
    (("queue", "set", "投诉", "--wrap-up", "5"), "Error: no queue '投诉'"),
    (("queue", "add", "技术支持", "--number", "1000"),
     "Error: queue '呼叫中心' already has the default (no menu key) on 1000"),
    (("queue", "set", "呼叫中心", "--overflow", "投诉"), "Error: no queue '投诉' to overflow to"),
    (("queue", "set", "呼叫中心", "--menu-key", "0"), "Error: menu key must be one digit 1-9, not '0'"),
    (("queue", "set", "呼叫中心", "--wrap-up", "-5"), "Error: wrap_up_seconds must not be negative"),
    (("queue", "set", "呼叫中心", "--number", "10-00"), "Error: '10-00' is not a hotline number (digits, e.g. 1000)"),
    (("queue", "set", "呼叫中心", "--skill", "粤语:10"),
     "Error: skill '粤语:10': the level is a whole number from 1 to 9"),
])
def test_rule_errors_are_one_line_and_exit_1_changing_nothing(cli, args, message):
    assert hotline(cli, "queue", "add", "呼叫中心", "--number", "1000", "--wrap-up", "12").exit_code == 0
    result = hotline(cli, *args)
    assert result.exit_code == 1 and result.output == message + "\n"
    assert list(listed(cli)) == ["呼叫中心"] and listed(cli)["呼叫中心"]["wrap_up_s"] == 12.0


@pytest.mark.parametrize("seconds", ["soon", "inf", "nan"])
def test_seconds_must_be_finite_numbers(cli, seconds):
    result = hotline(cli, "queue", "add", "呼叫中心", "--ring-timeout", seconds)
    assert result.exit_code == 2 and f"'{seconds}' is not a number of seconds" in result.output


def test_no_queues_yet(cli):
    assert listed(cli) == {}
    assert hotline(cli, "queue", "list").output == "no queues yet: `hotline init` creates '呼叫中心'\n"
    status = hotline(cli, "queue", "status", "--json")
    assert json.loads(status.output) == {"queues": [], "agents": []}
    assert hotline(cli, "queue", "status").output == "no agents yet\n"


@pytest.fixture
def busy(settings, cli):
    """呼叫中心 with two callers waiting (90 s and 30 s), li talking to a third, zhang logged out."""
    hotline(cli, "queue", "add", "呼叫中心", "--number", "1000")
    hotline(cli, "queue", "add", "技术支持", "--number", "1000", "--menu-key", "1")
    with session_scope(settings) as session:
        queue = queue_named(session, "呼叫中心")
        for name, extension in (("zhang", None), ("li", "1002")):
            add_user(session, name, Role.AGENT, "agent-pass-1", realm=settings.sip.realm, extension=extension)
        li = agent_named(session, "li")
        agent_named(session, "zhang")
        log_in(session, li, source="test")
        uids = []
        for caller, ago in (("13800138001", 90), ("13800138002", 30), ("13800138003", 200)):
            call = log_inbound(session, settings, caller=caller, callee="1000", sip_call_id=caller,
                               at=utcnow() - timedelta(seconds=ago + 5))
            call.queue = queue
            mark_state(session, call, CallState.QUEUED, utcnow() - timedelta(seconds=ago))
            uids.append(call.uid)
        offer(session, li, uids[2])
        answer(session, li, uids[2])
        mark_bridged(session, call, li.user)
    return uids


def without_waits(status: dict[str, object]) -> dict[str, object]:
    return {**status, "queues": [{**q, "waiting": [{**c, "waited_s": None} for c in q["waiting"]]}
                                 for q in status["queues"]]}


def test_status_json_is_the_board_s_queue_status(settings, cli, busy):
    first, second, talking = busy
    result = hotline(cli, "queue", "status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    with session_scope(settings) as session:
        assert without_waits(status) == without_waits(queue_status(session, settings))
    main_queue, support = status["queues"]
    assert (main_queue["name"], main_queue["numbers"], support["waiting"]) == ("呼叫中心", ["1000"], [])
    assert [(c["call_id"], c["caller_id"], c["position"]) for c in main_queue["waiting"]] == \
        [(first, "+8613800138001", 1), (second, "+8613800138002", 2)]
    assert main_queue["waiting"][0]["waited_s"] >= 90 and main_queue["waiting"][1]["waited_s"] >= 30
    assert [(a["name"], a["extension"], a["state"], a["call_id"]) for a in status["agents"]] == \
        [("li", "1002", "on_call", talking), ("zhang", None, "logged_out", None)]


def test_status_text_is_a_table(cli, busy):
    first, second, talking = busy
    lines = hotline(cli, "queue", "status").output.splitlines()
    assert lines[0] == "呼叫中心 (1000): 2 waiting"
    assert lines[1].split()[:2] == ["1.", "+8613800138001"] and lines[1].endswith(f"call {first}")
    assert lines[2].split()[:2] == ["2.", "+8613800138002"] and lines[2].endswith(f"call {second}")
    assert lines[3:5] == ["技术支持 (1000): 0 waiting", "agents:"]
    assert lines[5].split()[:3] == ["li", "1002", "on_call"] and lines[5].endswith(f"call {talking}")
    assert lines[6].split()[:3] == ["zhang", "-", "logged_out"] and len(lines) == 7
