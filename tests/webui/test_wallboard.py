"""The wallboard: per queue who waits, agents by state, calls in progress and today's figures, live."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from models.agents import agent_named, answer, log_in, make_available, offer, pause
from models.base import utcnow
from models.call import CallOutcome, CallState, HangupParty
from models.calllog import log_inbound, mark_bridged, mark_ended, mark_state
from models.user import Role
from tests.webui.conftest import csrf_token, queue_caller
from workers import bus


def figure(page: str, name: str, queue: str | None = None) -> str:
    """The figure shown in a ``data-figure`` (or agents' ``data-state``) cell, of one queue or of all."""
    section = page.split(f'data-queue="{queue}"')[1] if queue else page.split('id="totals"')[1]
    return re.search(rf'data-(?:figure|state)="{name}">([^<]*)<', section).group(1)


@pytest.fixture
def busy_day(db, settings, hotline_queue):
    """Since a few seconds: one call done, one abandoned, zhang talking to one, one caller waiting."""
    now = utcnow()

    def call(caller: str, ring: float, queued: float):
        made = log_inbound(db, settings, caller=caller, callee="1000", sip_call_id=caller, at=now - timedelta(seconds=ring))
        made.queue = hotline_queue
        mark_state(db, made, CallState.QUEUED, now - timedelta(seconds=queued))
        return made

    done = call("13800000001", 20, 18)
    mark_bridged(db, done, agent_named(db, "zhang").user, now - timedelta(seconds=16))
    mark_ended(db, done, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER, at=now - timedelta(seconds=10))
    gave_up = call("13800000002", 20, 18)
    mark_ended(db, gave_up, outcome=CallOutcome.ABANDONED, hangup_by=HangupParty.CUSTOMER,
               at=now - timedelta(seconds=12))
    talking = call("13800000003", 9, 8)
    zhang = agent_named(db, "zhang")
    log_in(db, zhang, source="test")
    offer(db, zhang, talking.uid)
    answer(db, zhang, talking.uid)
    mark_bridged(db, talking, zhang.user, now - timedelta(seconds=4))
    db.commit()
    return queue_caller(db, settings, hotline_queue, "13800000004")


def test_the_wallboard_needs_a_login(client):
    for url in ("/wallboard/", "/wallboard/stream"):
        response = client.get(url)
        assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


@pytest.mark.parametrize("role, status", [(Role.AGENT, 403), (Role.REVISIT, 403), (Role.QA, 403),
                                          (Role.SUPERVISOR, 200), (Role.ADMIN, 200)])
def test_the_wallboard_is_for_supervisors_and_admins(login_as, role, status):
    client = login_as(role)
    assert client.get("/wallboard/").status_code == status
    assert client.get("/wallboard/stream").status_code == status
    assert ("监控大屏" in client.get("/calls/").get_data(as_text=True)) is (status == 200)


def test_the_board_shows_waits_agents_calls_and_todays_figures(login_as, busy_day):
    page = login_as(Role.SUPERVISOR).get("/wallboard/").get_data(as_text=True)
    assert "监控大屏" in page and "呼叫中心" in page
    queue = "呼叫中心"
    assert figure(page, "waiting", queue) == "1" and "+8613800000004" in page
    assert figure(page, "in-progress", queue) == "1" and "+8613800000003" in page and "zhang" in page
    assert figure(page, "on_call", queue) == "1" and figure(page, "available", queue) == "0"
    assert figure(page, "offered", queue) == "4"
    assert figure(page, "service-level", queue) == "50%" and figure(page, "abandonment", queue) == "25%"
    assert figure(page, "asa", queue) == "0:03" and figure(page, "aht", queue) == "0:06"
    assert figure(page, "waiting") == "1" and figure(page, "on_call") == "1"
    assert "服务水平（15 秒内接听）" in page


def test_the_board_speaks_english_second(login_as, busy_day):
    page = login_as(Role.SUPERVISOR).get("/wallboard/?lang=en").get_data(as_text=True)
    assert "Wallboard" in page and "Longest wait" in page and "Service level (answered within 15 s)" in page


def test_a_board_without_queues_says_how_to_add_one(login_as):
    assert "hotline queue add" in login_as(Role.ADMIN).get("/wallboard/").get_data(as_text=True)


def test_the_stream_brings_new_callers_and_agent_changes(login_as, open_stream, db, settings, hotline_queue):
    board = open_stream(login_as(Role.SUPERVISOR), "/wallboard/stream")
    first = board.wait_for(lambda payload: True)["board"]
    assert figure(first, "waiting", "呼叫中心") == "0" and figure(first, "available", "呼叫中心") == "0"

    call = queue_caller(db, settings, hotline_queue, "13900139000")
    shown = board.wait_for(lambda payload: "+8613900139000" in payload["board"])["board"]
    assert figure(shown, "waiting", "呼叫中心") == "1"

    zhang = agent_named(db, "zhang")
    make_available(db, zhang, source="test")
    db.commit()
    board.wait_for(lambda payload: figure(payload["board"], "available", "呼叫中心") == "1")
    pause(db, zhang, "休息", source="test")
    db.commit()
    board.wait_for(lambda payload: figure(payload["board"], "paused", "呼叫中心") == "1")

    mark_ended(db, call, outcome=CallOutcome.ABANDONED, hangup_by=HangupParty.CUSTOMER)
    db.commit()
    gone = board.wait_for(lambda payload: "+8613900139000" not in payload["board"])["board"]
    assert figure(gone, "abandonment", "呼叫中心") == "100%"


def test_a_supervisor_listens_to_a_call_in_progress_through_their_softphone(login_as, db, settings, hotline_queue):
    supervisor = login_as(Role.SUPERVISOR)
    call = queue_caller(db, settings, hotline_queue)
    mark_bridged(db, call, agent_named(db, "zhang").user)
    db.commit()
    page = supervisor.get("/wallboard/").get_data(as_text=True)
    assert 'data-action="listen"' in page and "监听" in page and "耳语" in page and "强插" in page
    token = csrf_token(page)
    no_phone = supervisor.post(f"/wallboard/calls/{call.uid}/supervise", data={"mode": "listen", "csrf_token": token},
                               follow_redirects=True)
    assert "您需要一个分机" in no_phone.get_data(as_text=True)
    boss = agent_named(db, "supervisor-user").user
    boss.extension = "1009"
    db.commit()
    requests = bus.call_requests(settings, timeout=0.1)
    next(requests)  # subscribed, as every hotline sip is
    supervisor.post(f"/wallboard/calls/{call.uid}/supervise", data={"mode": "whisper", "csrf_token": token})
    assert next(r for r in requests if r is not None) == {"uid": call.uid, "action": "whisper", "target": "1009"}
    requests.close()
