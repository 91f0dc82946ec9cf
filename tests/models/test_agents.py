"""The agent state machine: each transition, the forbidden ones, races between processes, the watchdog."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, select

from models.accounts import add_user
from models.agent import Agent, AgentEvent, AgentState
from models.agents import (
    MISSED_REASON, AgentStateError, agent_for_call, agent_named, agent_of, answer, available_for, choose,
    end_due_wrap_ups, end_wrap_up, finish_call, log_in, log_out, make_available, miss, offer, pause, release,
    repair_stuck, serves, skill_levels,
)
from models.base import utcnow
from models.call import CallOutcome, HangupParty
from models.calllog import log_inbound, mark_ended
from models.db import session_factory
from models.queues import add_queue
from models.user import Role, User


def person(db, settings, name, extension="1001", skills=()):
    user = add_user(db, name, Role.AGENT, "agent-pass-1", realm=settings.sip.realm, extension=extension,
                    skills=list(skills))
    return agent_of(db, user)


@pytest.fixture
def zhang(db, settings):
    return person(db, settings, "zhang", skills=["粤语:3"])


def events(db, agent):
    return [(e.previous.value, e.state.value, e.reason, e.call_uid, e.source)
            for e in db.scalars(select(AgentEvent).where(AgentEvent.agent_id == agent.id).order_by(AgentEvent.id))]


def test_a_new_agent_is_logged_out_and_found_by_name(db, settings, zhang):
    assert zhang.state is AgentState.LOGGED_OUT and zhang.call_uid is None and zhang.queues == []
    assert agent_named(db, "zhang") is zhang and agent_of(db, zhang.user) is zhang
    assert agent_named(db, "nobody") is None
    assert db.scalars(select(Agent)).all() == [zhang]


def test_a_call_from_ringing_to_wrap_up_to_available_writes_each_change(db, settings, zhang):
    assert log_in(db, zhang, source="desk") and zhang.state is AgentState.AVAILABLE
    assert offer(db, zhang, "call-1") and (zhang.state, zhang.call_uid) == (AgentState.RINGING, "call-1")
    assert agent_for_call(db, "call-1") is zhang
    assert answer(db, zhang, "call-1") and zhang.state is AgentState.ON_CALL
    before = utcnow()
    assert finish_call(db, zhang, 30) and zhang.state is AgentState.WRAP_UP and zhang.call_uid is None
    assert before + timedelta(seconds=30) <= zhang.wrap_up_until <= utcnow() + timedelta(seconds=30)
    assert end_wrap_up(db, zhang, source="desk") and zhang.state is AgentState.AVAILABLE
    assert zhang.wrap_up_until is None
    assert events(db, zhang) == [
        ("logged_out", "available", "", None, "desk"),
        ("available", "ringing", "", "call-1", "distributor"),
        ("ringing", "on_call", "", "call-1", "distributor"),
        ("on_call", "wrap_up", "", None, "distributor"),
        ("wrap_up", "available", "", None, "desk"),
    ]
    first, *_, last = db.scalars(select(AgentEvent).order_by(AgentEvent.id)).all()
    assert first.at <= last.at and last.at == zhang.since


def test_no_wrap_up_makes_the_agent_available_at_once_as_the_newest_idle(db, settings, zhang):
    log_in(db, zhang, source="desk")
    idle = zhang.idle_since
    offer(db, zhang, "call-1")
    answer(db, zhang, "call-1")
    assert finish_call(db, zhang, 0) and zhang.state is AgentState.AVAILABLE and zhang.idle_since >= idle
    assert events(db, zhang)[-1] == ("on_call", "available", "", None, "distributor")


def test_release_keeps_the_agent_s_place_and_a_miss_pauses_them(db, settings, zhang):
    log_in(db, zhang, source="desk")
    idle = zhang.idle_since
    offer(db, zhang, "call-1")
    assert release(db, zhang) and zhang.state is AgentState.AVAILABLE and zhang.idle_since == idle
    offer(db, zhang, "call-2")
    assert miss(db, zhang) and (zhang.state, zhang.reason, zhang.call_uid) == (AgentState.PAUSED, MISSED_REASON, None)
    assert make_available(db, zhang, source="desk") and zhang.state is AgentState.AVAILABLE
    assert zhang.idle_since > idle and zhang.reason == ""


def test_pause_and_log_out(db, settings, zhang):
    assert pause(db, zhang, "培训", source="cli") and (zhang.state, zhang.reason) == (AgentState.PAUSED, "培训")
    assert pause(db, zhang, "午休", source="cli") and zhang.reason == "午休"  # another reason
    assert log_out(db, zhang, source="cli") and zhang.state is AgentState.LOGGED_OUT
    log_in(db, zhang, source="desk")
    offer(db, zhang, "call-1")
    answer(db, zhang, "call-1")
    # The phone unregistered in the middle of a call: logged out from any state.
    assert log_out(db, zhang, source="pbx", reason="phone not registered") and zhang.state is AgentState.LOGGED_OUT
    assert events(db, zhang)[-1] == ("on_call", "logged_out", "phone not registered", None, "pbx")


def test_forbidden_transitions_raise_and_change_nothing(db, settings, zhang):
    with pytest.raises(AgentStateError, match="logged_out → logged_out is not allowed"):
        log_out(db, zhang, source="cli")
    log_in(db, zhang, source="desk")
    with pytest.raises(AgentStateError, match="available → available"):
        make_available(db, zhang, source="desk")
    offer(db, zhang, "call-1")
    answer(db, zhang, "call-1")
    with pytest.raises(AgentStateError, match="zhang: on_call → paused is not allowed"):
        pause(db, zhang, "午休", source="desk")
    assert zhang.state is AgentState.ON_CALL and len(events(db, zhang)) == 3


def test_transitions_from_the_wrong_state_return_false(db, settings, zhang):
    assert not offer(db, zhang, "call-1")  # logged out: nobody to ring
    assert not answer(db, zhang, "call-1") and not release(db, zhang) and not miss(db, zhang)
    assert not finish_call(db, zhang, 30) and not finish_call(db, zhang, 0)
    assert not end_wrap_up(db, zhang, source="desk")
    log_in(db, zhang, source="desk")
    offer(db, zhang, "call-1")
    assert not offer(db, zhang, "call-2") and zhang.call_uid == "call-1"  # claimed already
    assert events(db, zhang) == [("logged_out", "available", "", None, "desk"),
                                 ("available", "ringing", "", "call-1", "distributor")]


def test_choose_what_a_person_may_choose(db, settings, zhang):
    assert choose(db, zhang, AgentState.AVAILABLE, source="cli") and zhang.state is AgentState.AVAILABLE
    idle = zhang.idle_since
    assert choose(db, zhang, AgentState.AVAILABLE, source="cli") and zhang.idle_since == idle  # keeps their place
    assert choose(db, zhang, AgentState.PAUSED, reason="午休", source="cli") and zhang.reason == "午休"
    assert choose(db, zhang, AgentState.PAUSED, reason="培训", source="cli") and zhang.reason == "培训"
    assert choose(db, zhang, AgentState.LOGGED_OUT, source="cli") and zhang.state is AgentState.LOGGED_OUT
    assert choose(db, zhang, AgentState.LOGGED_OUT, source="cli")
    assert len(events(db, zhang)) == 4
    with pytest.raises(AgentStateError, match="can choose available, logged_out, paused, not on_call"):
        choose(db, zhang, AgentState.ON_CALL, source="cli")
    choose(db, zhang, AgentState.AVAILABLE, source="cli")
    offer(db, zhang, "call-1")
    with pytest.raises(AgentStateError, match="zhang is ringing: wait until the call ends"):
        choose(db, zhang, AgentState.PAUSED, reason="午休", source="desk")
    assert choose(db, zhang, AgentState.LOGGED_OUT, source="desk")  # leaving is always possible


def test_an_agent_without_an_extension_cannot_be_available(db, settings):
    wang = person(db, settings, "wang", extension=None)
    with pytest.raises(AgentStateError, match="wang has no extension to ring"):
        choose(db, wang, AgentState.AVAILABLE, source="cli")
    assert choose(db, wang, AgentState.PAUSED, reason="培训", source="cli")


@pytest.fixture
def two_processes(db, settings, zhang):
    """Zhang available, committed, and a second session (another process) that has read him too."""
    log_in(db, zhang, source="desk")
    db.commit()
    other = session_factory(settings)()
    yield zhang, agent_named(other, "zhang"), other
    other.rollback()
    other.close()


def test_two_processes_offering_one_agent_only_one_wins(db, two_processes):
    zhang, his_copy, other = two_processes
    assert offer(db, zhang, "call-1")
    db.commit()
    assert his_copy.state is AgentState.AVAILABLE  # what the other process read before
    assert not offer(other, his_copy, "call-2")
    assert (his_copy.state, his_copy.call_uid) == (AgentState.RINGING, "call-1")


def test_the_conditional_update_loses_a_race_it_could_not_see_coming(db, two_processes):
    """The other process writes between our read of the state and our UPDATE: the UPDATE matches no row."""
    zhang, his_copy, other = two_processes

    paused = []

    @event.listens_for(other, "do_orm_execute")
    def desk_pauses_first(state):
        if state.is_update and not paused:
            paused.append(pause(db, zhang, "午休", source="desk"))
            db.commit()

    assert not offer(other, his_copy, "call-2")
    assert paused == [True]
    assert (his_copy.state, his_copy.reason, his_copy.call_uid) == (AgentState.PAUSED, "午休", None)
    other.commit()
    assert [e[1] for e in events(db, zhang)] == ["available", "paused"]  # the loser wrote no event


def test_end_due_wrap_ups_frees_only_those_whose_time_is_up(db, settings, zhang):
    li = person(db, settings, "li", extension="1002")
    for agent, seconds in ((zhang, 10), (li, 60)):
        log_in(db, agent, source="desk")
        offer(db, agent, f"call-{agent.id}")
        answer(db, agent, f"call-{agent.id}")
        finish_call(db, agent, seconds)
    assert end_due_wrap_ups(db, now=utcnow() - timedelta(seconds=5)) == []
    assert end_due_wrap_ups(db, now=utcnow() + timedelta(seconds=30)) == [zhang]
    assert (zhang.state, li.state) == (AgentState.AVAILABLE, AgentState.WRAP_UP)
    assert events(db, zhang)[-1] == ("wrap_up", "available", "", None, "wrap-up timer")


def test_repair_stuck_frees_agents_whose_call_is_over(db, settings, zhang):
    """Ringing or on a call: kept while the call lives here or its row is open; freed when it ended or never was."""
    li, wang, zhao = (person(db, settings, name, extension) for name, extension in
                      (("li", "1002"), ("wang", "1003"), ("zhao", "1004")))
    live = log_inbound(db, settings, caller="13800138001", callee="1000", sip_call_id="a")
    elsewhere = log_inbound(db, settings, caller="13800138002", callee="1000", sip_call_id="b")
    over = log_inbound(db, settings, caller="13800138003", callee="1000", sip_call_id="c")
    mark_ended(db, over, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER)
    for agent, uid in ((zhang, live.uid), (li, elsewhere.uid), (wang, over.uid), (zhao, "never-logged")):
        log_in(db, agent, source="desk")
        offer(db, agent, uid)
    answer(db, wang, over.uid)
    assert sorted(repair_stuck(db, {live.uid})) == [f"wang: on_call for call {over.uid} that is over → available",
                                                    "zhao: ringing for call never-logged that is over → available"]
    assert [a.state for a in (zhang, li, wang, zhao)] == [AgentState.RINGING, AgentState.RINGING,
                                                         AgentState.AVAILABLE, AgentState.AVAILABLE]
    assert events(db, wang)[-1] == ("on_call", "available", "", None, "watchdog")
    assert repair_stuck(db, {live.uid}) == []  # nothing left to repair


def test_skill_levels_default_to_one():
    assert skill_levels(["粤语:3", "空调", " 冰箱 : 2 ", "洗衣机:高"]) == {"粤语": 3, "空调": 1, "冰箱": 2, "洗衣机": 1}
    assert skill_levels([]) == {}


def test_serves_needs_every_skill_at_its_level_and_one_of_the_agent_s_queues(db, settings, zhang):
    anyone = add_queue(db, "呼叫中心", numbers=["1000"])
    cantonese = add_queue(db, "粤语", numbers=["1001"], skills=["粤语:2"])
    expert = add_queue(db, "粤语空调", numbers=["1002"], skills=["粤语:4"])
    air = add_queue(db, "空调", numbers=["1003"], skills=["粤语", "空调"])
    assert [serves(zhang, q) for q in (anyone, cantonese, expert, air)] == [True, True, False, False]
    zhang.queues = ["粤语"]
    assert [serves(zhang, q) for q in (anyone, cantonese)] == [False, True]


def test_available_for_longest_idle_first_with_a_phone_and_the_skills(db, settings, zhang):
    queue = add_queue(db, "粤语", numbers=["1000"], skills=["粤语"])
    li = person(db, settings, "li", extension="1002", skills=["粤语:1"])
    wang = person(db, settings, "wang", extension="1003", skills=["粤语"])
    zhao = person(db, settings, "zhao", extension="1004")  # no 粤语
    sun = person(db, settings, "sun", extension="1005", skills=["粤语"])
    ma = person(db, settings, "ma", extension=None, skills=["粤语"])  # no phone to ring
    for agent in (zhang, li, wang, zhao, sun, ma):
        log_in(db, agent, source="desk")
    now = utcnow()
    for agent, idle_minutes in ((zhang, 1), (li, 20), (wang, 5), (zhao, 30), (sun, 40), (ma, 50)):
        agent.idle_since = now - timedelta(minutes=idle_minutes)
    db.get(User, sun.user_id).active = False  # left the company
    db.flush()
    assert available_for(db, queue) == [li, wang, zhang]
    offer(db, li, "call-1")
    release(db, li)  # the caller hung up while li's phone rang: li keeps the head of the line
    assert available_for(db, queue) == [li, wang, zhang]
    pause(db, wang, "午休", source="desk")
    assert available_for(db, queue) == [li, zhang]
    make_available(db, wang, source="desk")
    assert available_for(db, queue) == [li, zhang, wang]
