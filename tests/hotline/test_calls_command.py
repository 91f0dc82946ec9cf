"""``hotline calls list``: several calls newest first (not in the order they were logged), JSON fields.

Queued calls also say who took them (agent, extension), when, how long the caller waited, and transfers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from config import Settings
from hotline.cli import main
from models.accounts import add_user
from models.call import CallOutcome, CallState, CallTransfer, HangupParty, SupervisionMode, TransferKind
from models.calllog import (
    close_recording,
    record_transfer,
    supervised,
    log_inbound,
    log_outbound,
    mark_answered,
    mark_bridged,
    mark_ended,
    mark_state,
    open_recording,
    ticket_for_call,
)
from models.db import session_scope
from models.queues import add_queue, queue_named
from models.user import Role, User

MORNING = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
FIELDS = {"id", "direction", "caller_id", "callee", "started_at", "answered_at", "ended_at", "outcome", "hangup_by",
          "queue", "agent", "recording", "ticket", "agent_extension", "bridged_at", "wait_s", "transfers", "segments",
          "supervisions"}


@pytest.fixture
def call_log(settings: Settings) -> dict[str, int]:
    """Four calls logged out of time order; two ring in the same second. Name → call id."""
    with session_scope(settings) as session:
        middle = log_inbound(session, settings, caller="13800138001", callee="1000", sip_call_id="b",
                             at=MORNING + timedelta(minutes=10))
        mark_answered(session, middle, MORNING + timedelta(minutes=10, seconds=3))
        recording = open_recording(session, settings, middle, "/recordings/b.wav")
        close_recording(session, settings, recording, duration=60.0, sha256="0" * 64, size_bytes=960044)
        mark_ended(session, middle, outcome=CallOutcome.ABANDONED, hangup_by=HangupParty.CUSTOMER,
                   at=MORNING + timedelta(minutes=11, seconds=3))
        ticket_for_call(session, settings, middle)
        oldest = log_inbound(session, settings, caller="13800138002", callee="1001", sip_call_id="a", at=MORNING)
        mark_ended(session, oldest, outcome=CallOutcome.CANCELLED, hangup_by=HangupParty.CUSTOMER,
                   at=MORNING + timedelta(seconds=5))
        newest = log_outbound(session, settings, number="13800138003", caller="1000", sip_call_id="c",
                              at=MORNING + timedelta(hours=1))
        # Logged last but ringing in the same second as the newest: the later id comes first.
        tie = log_inbound(session, settings, caller="13800138004", callee="1000", sip_call_id="d",
                          at=MORNING + timedelta(hours=1))
        return {"oldest": oldest.id, "middle": middle.id, "newest": newest.id, "tie": tie.id}


def list_calls(*args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(main, ["calls", "list", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_json_lists_every_call_newest_first_with_all_fields(call_log: dict[str, int]) -> None:
    rows = list_calls()
    assert [row["id"] for row in rows] == [call_log[name] for name in ("tie", "newest", "middle", "oldest")]
    assert all(set(row) == FIELDS for row in rows)
    tie, newest, middle, oldest = rows
    assert middle["direction"] == "inbound" and middle["caller_id"] == "+8613800138001" and middle["callee"] == "1000"
    assert middle["started_at"] == "2026-03-02 01:10:00+00:00"  # UTC, as stored
    assert middle["answered_at"] == "2026-03-02 01:10:03+00:00" and middle["ended_at"] == "2026-03-02 01:11:03+00:00"
    assert middle["outcome"] == "abandoned" and middle["hangup_by"] == "customer"
    assert middle["recording"] == "/recordings/b.wav" and middle["ticket"]
    assert middle["queue"] is None and middle["agent"] is None and middle["agent_extension"] is None
    assert (middle["bridged_at"], middle["wait_s"], middle["transfers"]) == (None, None, [])  # never queued
    assert (middle["segments"], middle["supervisions"]) == ([], [])
    assert oldest["outcome"] == "cancelled" and oldest["callee"] == "1001" and oldest["recording"] is None
    assert oldest["ticket"] is None and oldest["answered_at"] is None
    assert newest["direction"] == "outbound" and newest["caller_id"] == "+8613800138003"
    assert newest["ended_at"] is None and newest["outcome"] is None and tie["caller_id"] == "+8613800138004"


def test_limit_keeps_the_newest(call_log: dict[str, int]) -> None:
    assert [row["id"] for row in list_calls("--limit", "2")] == [call_log["tie"], call_log["newest"]]


def test_text_lists_newest_first_with_state_ticket_and_recording(call_log: dict[str, int]) -> None:
    result = CliRunner().invoke(main, ["calls", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [int(line.split()[0]) for line in lines] == [call_log[name] for name in ("tie", "newest", "middle", "oldest")]
    tie, newest, middle, oldest = lines
    assert "+8613800138001 → 1000" in middle and "abandoned" in middle and "/recordings/b.wav" in middle
    assert "cancelled" in oldest and oldest.rstrip().endswith("-")
    assert " live " in newest and "outbound" in newest and " live " in tie


def test_an_empty_call_log_prints_nothing(cli: CliRunner) -> None:
    assert list_calls() == []
    result = cli.invoke(main, ["calls", "list"])
    assert result.exit_code == 0 and result.output == ""


@pytest.fixture
def desk(settings: Settings) -> None:
    """呼叫中心 and zhang at extension 1001."""
    with session_scope(settings) as session:
        add_queue(session, "呼叫中心")
        add_user(session, "zhang", Role.AGENT, "agent-pass-1", realm=settings.sip.realm, extension="1001")


def queued_call(settings: Settings, caller: str, *, queued: int, bridged: int | None = None, ended: int | None = None,
                overflowed: bool = False) -> int:
    """A call queued to 呼叫中心 (then bridged to zhang, ended) so many seconds after MORNING."""
    with session_scope(settings) as session:
        call = log_inbound(session, settings, caller=caller, callee="1000", sip_call_id=caller, at=MORNING)
        call.queue = queue_named(session, "呼叫中心")
        if overflowed:
            call.transfers.append(CallTransfer(kind=TransferKind.OVERFLOW, from_="售后服务", to="呼叫中心",
                                               at=MORNING + timedelta(seconds=queued - 1)))
        mark_state(session, call, CallState.QUEUED, MORNING + timedelta(seconds=queued))
        if bridged is not None:
            mark_bridged(session, call, session.scalar(select(User).where(User.username == "zhang")),
                         MORNING + timedelta(seconds=bridged))
        if ended is not None:
            mark_ended(session, call, outcome=CallOutcome.COMPLETED if bridged else CallOutcome.ABANDONED,
                       hangup_by=HangupParty.CUSTOMER, at=MORNING + timedelta(seconds=ended))
        return call.id


def test_a_queued_call_says_who_took_it_and_how_long_the_caller_waited(settings: Settings, desk: None) -> None:
    taken = queued_call(settings, "13800138001", queued=5, bridged=47, ended=300, overflowed=True)
    gave_up = queued_call(settings, "13800138002", queued=3, ended=65)
    waiting = queued_call(settings, "13800138003", queued=4)
    rows = {row["id"]: row for row in list_calls()}
    assert all(set(row) == FIELDS for row in rows.values())
    assert (rows[taken]["queue"], rows[taken]["agent"], rows[taken]["agent_extension"]) == ("呼叫中心", "zhang", "1001")
    assert rows[taken]["bridged_at"] == "2026-03-02 01:00:47+00:00"
    assert rows[taken]["wait_s"] == 42.0  # bridged - queued
    assert rows[taken]["transfers"] == [{"from": "售后服务", "to": "呼叫中心", "at": "2026-03-02 01:00:04+00:00",
                                         "kind": "overflow"}]
    assert (rows[gave_up]["agent"], rows[gave_up]["bridged_at"], rows[gave_up]["wait_s"]) == (None, None, 62.0)
    assert (rows[waiting]["wait_s"], rows[waiting]["ended_at"], rows[waiting]["transfers"]) == (None, None, [])


def test_a_transferred_and_supervised_call_lists_its_agents_and_supervisors(settings: Settings, desk: None) -> None:
    at = lambda seconds: MORNING + timedelta(seconds=seconds)  # noqa: E731
    with session_scope(settings) as session:
        li = add_user(session, "li", Role.AGENT, "agent-pass-2", realm=settings.sip.realm, extension="1002")
        add_user(session, "boss", Role.SUPERVISOR, "boss-pass-1", realm=settings.sip.realm, extension="1009")
        call = log_inbound(session, settings, caller="13800138001", callee="1000", sip_call_id="t", at=MORNING)
        mark_state(session, call, CallState.QUEUED, at(5))
        mark_bridged(session, call, session.scalar(select(User).where(User.username == "zhang")), at(10))
        supervised(session, call, "1009", SupervisionMode.LISTEN, at(20))
        supervised(session, call, "1009", SupervisionMode.BARGE, at(30))
        supervised(session, call, "1009", None, at(40))
        record_transfer(session, call, TransferKind.BLIND, "zhang", "li", at(60))
        mark_bridged(session, call, li, at(60))
        mark_ended(session, call, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER, at=at(90))
        call_id = call.id
    [row] = [row for row in list_calls() if row["id"] == call_id]
    assert row["agent"] == "li"  # the call's agent is whoever served the customer last
    assert row["segments"] == [
        {"agent": "zhang", "from": "2026-03-02 01:00:10+00:00", "to": "2026-03-02 01:01:00+00:00"},
        {"agent": "li", "from": "2026-03-02 01:01:00+00:00", "to": "2026-03-02 01:01:30+00:00"},
    ]
    assert row["supervisions"] == [
        {"supervisor": "boss", "mode": "listen", "at": "2026-03-02 01:00:20+00:00", "until": "2026-03-02 01:00:30+00:00"},
        {"supervisor": "boss", "mode": "barge", "at": "2026-03-02 01:00:30+00:00", "until": "2026-03-02 01:00:40+00:00"},
    ]
