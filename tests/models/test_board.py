"""The board: waiting callers in order, agents by name, per-queue and total figures of the local day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.accounts import add_user
from models.agents import agent_named, answer, log_in, offer
from models.board import queue_status, wallboard
from models.call import Call, CallOutcome, CallState, HangupParty
from models.calllog import log_inbound, log_outbound, mark_bridged, mark_ended, mark_state
from models.db import session_factory
from models.queues import add_queue
from models.user import Role

NOW = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # 12:00 in Beijing
MIDNIGHT = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)  # 00:00 in Beijing
SECOND = timedelta(seconds=1)


def a_call(db, settings, queue, ring, *, queued=None, bridged=None, ended=None, outcome=CallOutcome.COMPLETED,
           agent=None, caller="13800138000"):
    """An inbound call of ``queue`` with the timestamps given (seconds after ``ring``)."""
    call = log_inbound(db, settings, caller=caller, callee="1000", sip_call_id=f"sip-{ring.timestamp()}", at=ring)
    call.queue = queue
    if queued is not None:
        mark_state(db, call, CallState.QUEUED, ring + queued * SECOND)
    if bridged is not None:
        mark_bridged(db, call, agent.user, ring + bridged * SECOND)
    if ended is not None:
        mark_ended(db, call, outcome=outcome, hangup_by=HangupParty.CUSTOMER, at=ring + ended * SECOND)
    return call


@pytest.fixture
def floor(db, settings):
    """Two queues on 1000 (粤语 needs level 2), three agents, calls waiting, talking and done today."""
    main = add_queue(db, "呼叫中心", numbers=["1000"])
    cantonese = add_queue(db, "粤语", numbers=["1000"], skills=["粤语:2"], menu_key="1")
    for name, extension, skills in (("zhang", "1001", ["粤语:3"]), ("li", "1002", []), ("wang", None, [])):
        add_user(db, name, Role.AGENT, "agent-pass-1", realm=settings.sip.realm, extension=extension, skills=skills)
    zhang, li, wang = (agent_named(db, name) for name in ("zhang", "li", "wang"))
    log_in(db, zhang, source="test")
    log_in(db, li, source="test")

    hour_ago = NOW - timedelta(hours=1)
    a_call(db, settings, main, hour_ago, queued=5, bridged=10, ended=130, agent=li)  # in target; ASA 5, AHT 120
    a_call(db, settings, main, hour_ago + 600 * SECOND, queued=5, bridged=35, ended=95, agent=li)  # ASA 30, AHT 60
    a_call(db, settings, main, hour_ago + 1200 * SECOND, queued=5, ended=65, outcome=CallOutcome.ABANDONED)
    talking = a_call(db, settings, main, NOW - 70 * SECOND, queued=5, bridged=10, agent=li)  # in target, ASA 5
    offer(db, li, talking.uid)
    answer(db, li, talking.uid)
    second = a_call(db, settings, main, NOW - 30.04 * SECOND, queued=0, caller="13800138002")
    first = a_call(db, settings, main, NOW - 95 * SECOND, queued=5, caller="13800138001")
    dialect = a_call(db, settings, cantonese, NOW - 12.345 * SECOND, queued=0, caller="13800138003")
    # Not today's: queued before local midnight, though it ended after it.
    a_call(db, settings, main, MIDNIGHT - 600 * SECOND, queued=5, bridged=20, ended=900, agent=li)
    # Not offered: an outbound call, and a caller who never reached a queue.
    outbound = log_outbound(db, settings, number="13800138009", caller="1000", sip_call_id="out", at=hour_ago)
    outbound.queue = main
    mark_state(db, outbound, CallState.QUEUED, hour_ago)
    mark_ended(db, outbound, outcome=CallOutcome.NO_ANSWER, hangup_by=HangupParty.SYSTEM, at=hour_ago)
    a_call(db, settings, None, hour_ago, queued=1, caller="13800138008")
    db.flush()
    return {"main": main, "cantonese": cantonese, "zhang": zhang, "li": li, "wang": wang, "talking": talking,
            "first": first, "second": second, "dialect": dialect}


def test_queue_status_lists_waiting_callers_next_first_and_every_agent_by_name(db, settings, floor):
    status = queue_status(db, settings, now=NOW)
    assert set(status) == {"queues", "agents"}
    main, cantonese = status["queues"]
    assert (main["name"], main["numbers"], cantonese["name"]) == ("呼叫中心", ["1000"], "粤语")
    assert main["waiting"] == [
        {"call_id": floor["first"].uid, "caller_id": "+8613800138001", "position": 1, "waited_s": 90.0},
        {"call_id": floor["second"].uid, "caller_id": "+8613800138002", "position": 2, "waited_s": 30.0},
    ]
    assert cantonese["waiting"] == [{"call_id": floor["dialect"].uid, "caller_id": "+8613800138003", "position": 1,
                                     "waited_s": 12.3}]
    li, wang, zhang = status["agents"]
    assert li == {"name": "li", "extension": "1002", "state": "on_call",
                  "since": floor["li"].since.isoformat(timespec="seconds"), "call_id": floor["talking"].uid}
    assert datetime.fromisoformat(li["since"]).utcoffset() == timedelta(0)
    assert (wang["name"], wang["extension"], wang["state"], wang["call_id"]) == ("wang", None, "logged_out", None)
    assert (zhang["name"], zhang["state"], zhang["call_id"]) == ("zhang", "available", None)


def test_a_caller_who_hangs_up_or_is_bridged_leaves_the_queue(db, settings, floor):
    mark_ended(db, floor["first"], outcome=CallOutcome.ABANDONED, hangup_by=HangupParty.CUSTOMER, at=NOW)
    mark_bridged(db, floor["second"], floor["zhang"].user, NOW)
    main, _ = queue_status(db, settings, now=NOW)["queues"]
    assert main["waiting"] == []


def test_the_board_is_rebuilt_from_the_database_by_any_process(db, settings, floor):
    db.commit()
    fresh = session_factory(settings)()
    try:
        assert queue_status(fresh, settings, now=NOW) == queue_status(db, settings, now=NOW)
        assert wallboard(fresh, settings, now=NOW) == wallboard(db, settings, now=NOW)
    finally:
        fresh.close()


def test_wallboard_per_queue_waiting_agents_talking_and_todays_figures(db, settings, floor):
    board = wallboard(db, settings, now=NOW)
    assert board["at"] == "2026-03-02T04:00:00+00:00" and board["target_s"] == 15.0  # 3 rings of 5 s
    main, cantonese = board["queues"]
    assert [caller["call_id"] for caller in main["waiting"]] == [floor["first"].uid, floor["second"].uid]
    assert main["longest_wait_s"] == 90.0 and cantonese["longest_wait_s"] == 12.3
    # Everyone serves 呼叫中心; only zhang has 粤语 at level 2 or more.
    assert main["agents"] == {"logged_out": 1, "available": 1, "ringing": 0, "on_call": 1, "wrap_up": 0, "paused": 0}
    assert cantonese["agents"] == {"logged_out": 0, "available": 1, "ringing": 0, "on_call": 0, "wrap_up": 0,
                                   "paused": 0}
    assert main["in_progress"] == [{"call_id": floor["talking"].uid, "caller_id": "+8613800138000",
                                    "state": "bridged", "agent": "li", "talk_s": 60.0}]
    assert cantonese["in_progress"] == []
    assert main["today"] == {"offered": 6, "answered": 3, "answered_in_target": 2, "abandoned": 1,
                             "service_level": 0.333, "abandonment_rate": 0.167,
                             "average_speed_of_answer_s": 13.3, "average_handle_s": 90.0}
    assert cantonese["today"] == {"offered": 1, "answered": 0, "answered_in_target": 0, "abandoned": 0,
                                  "service_level": 0.0, "abandonment_rate": 0.0,
                                  "average_speed_of_answer_s": None, "average_handle_s": None}


def test_wallboard_totals_count_each_agent_once_and_every_queue_s_calls(db, settings, floor):
    totals = wallboard(db, settings, now=NOW)["totals"]
    assert (totals["waiting"], totals["longest_wait_s"], totals["in_progress"]) == (3, 90.0, 1)
    assert totals["agents"] == {"logged_out": 1, "available": 1, "ringing": 0, "on_call": 1, "wrap_up": 0,
                                "paused": 0}
    assert totals["today"] == {"offered": 7, "answered": 3, "answered_in_target": 2, "abandoned": 1,
                               "service_level": 0.286, "abandonment_rate": 0.143,
                               "average_speed_of_answer_s": 13.3, "average_handle_s": 90.0}


def test_a_held_call_is_still_in_progress_and_the_day_starts_at_local_midnight(db, settings, floor):
    mark_state(db, floor["talking"], CallState.ON_HOLD)
    main, _ = wallboard(db, settings, now=NOW)["queues"]
    assert [call["state"] for call in main["in_progress"]] == ["on_hold"]
    # Just after midnight in Beijing only the call queued before it and after the previous midnight counts.
    early = wallboard(db, settings, now=MIDNIGHT - SECOND)["queues"][0]["today"]
    assert (early["offered"], early["answered_in_target"], early["service_level"]) == (1, 0, 0.0)


def test_an_empty_floor(db, settings):
    assert queue_status(db, settings, now=NOW) == {"queues": [], "agents": []}
    totals = wallboard(db, settings, now=NOW)["totals"]
    assert totals["waiting"] == 0 and totals["longest_wait_s"] == 0.0 and totals["in_progress"] == 0
    assert set(totals["agents"].values()) == {0}
    assert totals["today"]["offered"] == 0 and totals["today"]["service_level"] is None


def test_an_ended_call_with_a_stale_queued_state_is_not_waiting(db, settings, floor):
    """Only the state and a missing end together say a caller waits (a repaired row may keep one)."""
    stale = db.get(Call, floor["first"].id)
    stale.ended_at = NOW
    db.flush()
    assert [c["call_id"] for c in queue_status(db, settings, now=NOW)["queues"][0]["waiting"]] == [floor["second"].uid]
