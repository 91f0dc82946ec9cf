"""The distributor against a real database: who is offered which caller, and what each ring's end does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from config import Settings
from models import agents as agent_rules
from models.accounts import add_user
from models.agent import AgentState
from models.db import session_scope
from models.queues import add_queue
from models.user import Role
from telephony.distributor import Distributor, QueueInfo, WaitingCall
from tests.telephony.peers import wait_for


@pytest.fixture
def distributor(settings: Settings) -> Iterator[Distributor]:
    settings.queues.wrap_up_seconds = 0
    with session_scope(settings) as session:
        add_queue(session, "技术支持", numbers=["1000"])
        add_queue(session, "粤语", numbers=["1001"], skills=["粤语:2"])
    running = Distributor(settings)
    running.start()
    assert wait_for(lambda: len(running.queues_for("1000")) == 1 and running.queues_for("1000")[0].id, 5)
    yield running
    running.stop()


def add_agent(settings: Settings, name: str, extension: str, *, skills: list[str] | None = None,
              idle_minutes: float = 0) -> None:
    with session_scope(settings) as session:
        user = add_user(session, name, Role.AGENT, "agent-password", realm="hotline", extension=extension,
                        skills=skills)
        agent = agent_rules.agent_of(session, user)
        agent_rules.log_in(session, agent, source="test")
        agent.idle_since -= timedelta(minutes=idle_minutes)


def state(settings: Settings, name: str) -> tuple[AgentState, str, str | None]:
    with session_scope(settings) as session:
        agent = agent_rules.agent_named(session, name)
        assert agent is not None
        return agent.state, agent.reason, agent.call_uid


def queue(distributor: Distributor, number: str) -> QueueInfo:
    [found] = distributor.queues_for(number)
    return found


def offered(waiting: WaitingCall, timeout: float = 5) -> str:
    assert waiting.offered.wait(timeout), f"{waiting.uid} was offered nobody"
    offer = waiting.take_offer()
    assert offer is not None
    return offer.username


def test_the_longest_idle_agent_is_offered_the_caller(distributor: Distributor, settings: Settings) -> None:
    add_agent(settings, "zhang", "2000", idle_minutes=1)
    add_agent(settings, "li", "2001", idle_minutes=5)
    waiting = distributor.enqueue("call-1", "+8613800138000", queue(distributor, "1000"))
    assert offered(waiting) == "li"
    assert state(settings, "li") == (AgentState.RINGING, "", "call-1")
    assert state(settings, "zhang")[0] is AgentState.AVAILABLE


def test_callers_are_served_in_order_across_queues_and_skills_decide(distributor: Distributor,
                                                                     settings: Settings) -> None:
    first = distributor.enqueue("call-1", "+8613800138001", queue(distributor, "1001"))
    second = distributor.enqueue("call-2", "+8613800138002", queue(distributor, "1000"))
    add_agent(settings, "chen", "2002", skills=["粤语:3"])  # serves both queues: the first caller is his
    assert offered(first) == "chen"
    assert not second.offered.wait(1.0)
    add_agent(settings, "zhang", "2000", skills=["粤语:1"])  # not enough 粤语 for the first queue
    assert offered(second) == "zhang"


def test_a_missed_ring_pauses_the_agent_and_the_caller_goes_to_the_next(distributor: Distributor,
                                                                         settings: Settings) -> None:
    add_agent(settings, "zhang", "2000", idle_minutes=5)
    add_agent(settings, "li", "2001")
    waiting = distributor.enqueue("call-1", "+8613800138000", queue(distributor, "1000"))
    assert offered(waiting) == "zhang"
    assert waiting.offer is not None
    distributor.missed(waiting.offer, waiting)
    assert wait_for(lambda: state(settings, "zhang")[:2] == (AgentState.PAUSED, agent_rules.MISSED_REASON), 5)
    assert offered(waiting) == "li"


def test_an_answered_call_ends_in_wrap_up_or_at_once_available(distributor: Distributor, settings: Settings) -> None:
    add_agent(settings, "zhang", "2000")
    waiting = distributor.enqueue("call-1", "+8613800138000", queue(distributor, "1000"))
    assert offered(waiting) == "zhang"
    offer = waiting.offer
    assert offer is not None
    distributor.leave(waiting)
    distributor.answered(offer)
    assert wait_for(lambda: state(settings, "zhang")[0] is AgentState.ON_CALL, 5)
    distributor.finished(offer, wrap_up_seconds=1.0)
    assert wait_for(lambda: state(settings, "zhang")[0] is AgentState.WRAP_UP, 5)
    assert wait_for(lambda: state(settings, "zhang")[0] is AgentState.AVAILABLE, 5)  # the timer ran out


def test_a_caller_who_left_is_never_offered(distributor: Distributor, settings: Settings) -> None:
    waiting = distributor.enqueue("call-1", "+8613800138000", queue(distributor, "1000"))
    distributor.leave(waiting)
    add_agent(settings, "zhang", "2000")
    assert not waiting.offered.wait(1.5)
    assert state(settings, "zhang")[0] is AgentState.AVAILABLE


def test_the_wait_estimate_counts_the_callers_ahead(distributor: Distributor, settings: Settings) -> None:
    queued = [distributor.enqueue(f"call-{n}", "+8613800138000", queue(distributor, "1000")) for n in range(3)]
    assert [distributor.estimated_wait(w)[0] for w in queued] == [0, 1, 2]
    waits = [distributor.estimated_wait(w)[1] for w in queued]
    assert waits == sorted(waits) and waits[0] < waits[2]


def test_a_number_without_a_queue_goes_to_the_default_queue(distributor: Distributor, settings: Settings) -> None:
    [fallback] = distributor.queues_for("9999")
    assert fallback.name == settings.queues.default_queue and fallback.id is None


def test_a_caller_passed_on_goes_first_and_not_back_to_who_passed_them(distributor: Distributor,
                                                                       settings: Settings) -> None:
    add_agent(settings, "zhang", "2000", idle_minutes=5)
    earlier = distributor.enqueue("call-1", "+8613800138001", queue(distributor, "1000"))
    assert offered(earlier) == "zhang"
    with session_scope(settings) as session:
        zhang_id = agent_rules.agent_named(session, "zhang").id
    assert earlier.offer is not None
    distributor.released(earlier.offer, earlier)
    distributor.leave(earlier)
    waiting = distributor.enqueue("call-2", "+8613800138002", queue(distributor, "1000"))
    passed = distributor.enqueue("call-3", "+8613800138003", queue(distributor, "1000"), at_head=True,
                                 passed_by=zhang_id)
    assert distributor.ahead_of(passed) == 0 and distributor.ahead_of(waiting) == 1
    assert offered(waiting) == "zhang"  # the passed-on caller waits for someone else
    assert not passed.offered.is_set()
