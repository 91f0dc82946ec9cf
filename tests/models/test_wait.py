"""The wait a queued caller is told: from their position, the agents staffed and recent handle times (talk, wrap-up)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.accounts import add_user
from models.call import CallOutcome, CallState, HangupParty
from models.calllog import log_inbound, mark_bridged, mark_ended, mark_state
from models.queues import add_queue
from models.user import Role
from models.wait import estimate_wait, handle_time, recent_handle_seconds, spoken_minutes

NOW = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def test_one_agent_the_next_caller_waits_half_a_call_and_each_caller_ahead_one_more():
    assert estimate_wait(0, 1, 180) == 90
    assert estimate_wait(1, 1, 180) == 270
    assert estimate_wait(2, 1, 180) == 450


def test_more_agents_share_the_callers_ahead():
    # 4 calls to end over 2 agents: the first of the two frees after a third of a call, then one every half call
    assert estimate_wait(3, 2, 100) == pytest.approx(100 / 3 + 150)
    assert estimate_wait(5, 3, 60) == pytest.approx(15 + 100)
    assert estimate_wait(3, 4, 100) < estimate_wait(3, 2, 100) < estimate_wait(3, 1, 100)


@pytest.mark.parametrize("staffed", [2, 4, 6])
def test_the_next_caller_of_several_busy_agents_waits_for_the_first_of_them(staffed):
    assert estimate_wait(0, staffed, 210) == pytest.approx(210 / (staffed + 1))
    assert estimate_wait(0, staffed, 210) < estimate_wait(0, staffed - 1, 210)


def test_nobody_staffed_is_estimated_as_one_agent_never_silence():
    assert estimate_wait(2, 0, 180) == estimate_wait(2, 1, 180) == 450


@pytest.mark.parametrize("ahead,staffed", [(0, 1), (0, 5), (1, 8), (10, 3)])
def test_an_estimate_is_never_negative(ahead, staffed):
    assert estimate_wait(ahead, staffed, 120) >= 0


@pytest.mark.parametrize("seconds,minutes", [(0, 1), (30, 1), (60, 1), (89, 1), (90, 2), (149, 2), (450, 8),
                                             (3600, 60)])
def test_spoken_minutes_are_the_nearest_whole_minute_and_at_least_one(seconds, minutes):
    assert spoken_minutes(seconds) == minutes


def handled(db, settings, queue, agent, ended_ago, talk_seconds, *, bridged=True):
    """A call of ``queue`` that ended ``ended_ago`` before NOW after ``talk_seconds`` with the agent."""
    ended = NOW - ended_ago
    start = ended - timedelta(seconds=talk_seconds + 20)
    call = log_inbound(db, settings, caller="13800138000", callee="1000", sip_call_id="x", at=start)
    call.queue = queue
    mark_state(db, call, CallState.QUEUED, start + timedelta(seconds=5))
    if bridged:
        mark_bridged(db, call, agent, ended - timedelta(seconds=talk_seconds))
    mark_ended(db, call, outcome=CallOutcome.COMPLETED if bridged else CallOutcome.ABANDONED,
               hangup_by=HangupParty.CUSTOMER, at=ended)
    return call


@pytest.fixture
def agent(db, settings):
    return add_user(db, "zhang", Role.AGENT, "agent-pass-1", realm=settings.sip.realm, extension="1001")


def test_a_queue_without_handled_calls_assumes_the_default_talk_time_and_its_wrap_up(db, settings):
    queue = add_queue(db, "呼叫中心")
    assert recent_handle_seconds(db, queue.id, settings, now=NOW) == 180.0 + 30.0
    assert recent_handle_seconds(db, None, settings, now=NOW) == 180.0 + 30.0


def test_recent_handle_time_of_the_queue_s_handled_calls_of_the_past_day(db, settings, agent):
    queue = add_queue(db, "呼叫中心")
    other = add_queue(db, "售后服务")
    for minutes, talk in ((5, 60), (50, 120), (600, 300)):
        handled(db, settings, queue, agent, timedelta(minutes=minutes), talk)
    handled(db, settings, queue, agent, timedelta(days=1, minutes=1), 3000)  # yesterday's
    handled(db, settings, queue, agent, timedelta(minutes=1), 999, bridged=False)  # abandoned: no handle time
    handled(db, settings, other, agent, timedelta(minutes=1), 10)  # another queue
    assert recent_handle_seconds(db, queue.id, settings, now=NOW) == 160.0 + 30.0  # talk, then the wrap-up
    assert recent_handle_seconds(db, other.id, settings, now=NOW) == 10.0 + 30.0


def test_only_the_last_recent_calls_count(db, settings, agent):
    queue = add_queue(db, "呼叫中心")
    for minutes, talk in ((5, 60), (10, 120), (15, 600)):
        handled(db, settings, queue, agent, timedelta(minutes=minutes), talk)
    few = settings.model_copy(deep=True)
    few.queues.recent_calls = 2
    assert recent_handle_seconds(db, queue.id, few, now=NOW) == 90.0 + 30.0


def test_a_queue_s_own_wrap_up_is_part_of_its_handle_time(db, settings, agent):
    queue = add_queue(db, "售后服务", wrap_up_seconds=0.0)
    slow = add_queue(db, "投诉", wrap_up_seconds=120.0)
    for talked in (queue, slow):
        handled(db, settings, talked, agent, timedelta(minutes=5), 200)
    assert recent_handle_seconds(db, queue.id, settings, now=NOW) == 200.0
    assert recent_handle_seconds(db, slow.id, settings, now=NOW) == 320.0


def test_handle_time_is_mean_talk_plus_wrap_up():
    assert handle_time([100, 200, 300], 30, 180) == 230
    assert handle_time([], 30, 180) == 210
