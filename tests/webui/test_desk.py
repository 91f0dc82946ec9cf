"""The agent desk: state buttons through the state machine, the caller card as the phone rings, the ticket saved with its audit trail."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models.agent import AgentEvent, AgentState
from models.agents import agent_named, answer, finish_call, log_in, offer
from models.call import CallOutcome, HangupParty
from models.calllog import mark_bridged, mark_ended, open_recording, ticket_for_call
from models.ticket import EventKind, Priority, TicketEvent, TicketType, Urgency
from models.ticketing import add_note
from models.transcript import Channel, Transcript, TranscriptSegment, TranscriptState
from models.accounts import add_user
from models.user import Role
from tests.webui.conftest import csrf_token, queue_caller
from workers import bus


def desk_token(client) -> str:
    return csrf_token(client.get("/desk/").get_data(as_text=True))


def press(client, action: str, reason: str = ""):
    """A state button of the desk, followed to the desk again."""
    return client.post("/desk/state", data={"action": action, "reason": reason, "csrf_token": desk_token(client)},
                       follow_redirects=True)


def zhang(db):
    agent = agent_named(db, "zhang")
    db.refresh(agent)
    return agent


def ring(db, settings, queue, caller: str = "13800138000", *, ticket: bool = True):
    """A queued caller offered to zhang: his phone rings."""
    agent = zhang(db)
    if agent.state is not AgentState.AVAILABLE:
        log_in(db, agent, source="test")
    call = queue_caller(db, settings, queue, caller, ticket=ticket)
    assert offer(db, agent, call.uid)
    db.commit()
    return call


def take(db, call):
    """zhang answers: the call is bridged to him."""
    agent = zhang(db)
    assert answer(db, agent, call.uid)
    mark_bridged(db, call, agent.user)
    db.commit()


# who may use the desk

def test_the_desk_needs_a_login(client):
    for url in ("/desk/", "/desk/stream"):
        response = client.get(url)
        assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


@pytest.mark.parametrize("role, page, button", [(Role.REVISIT, 403, 403), (Role.QA, 403, 403),
                                                (Role.SUPERVISOR, 200, 302), (Role.ADMIN, 200, 302)])
def test_the_desk_is_for_agents_supervisors_and_admins(login_as, role, page, button):
    client = login_as(role)
    assert client.get("/desk/").status_code == page
    assert client.get("/desk/stream").status_code == page
    token = csrf_token(client.get("/calls/").get_data(as_text=True))
    assert client.post("/desk/state", data={"action": "ready", "csrf_token": token}).status_code == button


def test_agents_see_the_desk_in_their_navigation_and_it_speaks_chinese_first(logged_in):
    page = logged_in.get("/desk/").get_data(as_text=True)
    assert "坐席工作台" in page and "已签出" in page and "就绪" in page
    assert "暂无来电" in page
    english = logged_in.get("/desk/?lang=en").get_data(as_text=True)
    assert "Agent desk" in english and "Ready" in english and "No caller now" in english


# state buttons

def test_ready_pause_and_log_out_go_through_the_state_machine(logged_in, db):
    page = press(logged_in, "ready").get_data(as_text=True)
    assert zhang(db).state is AgentState.AVAILABLE and 'data-agent-state="available"' in page
    press(logged_in, "pause", "用餐")
    agent = zhang(db)
    assert agent.state is AgentState.PAUSED and agent.reason == "用餐"
    press(logged_in, "log_out")
    assert zhang(db).state is AgentState.LOGGED_OUT
    events = db.scalars(select(AgentEvent).where(AgentEvent.agent_id == agent.id).order_by(AgentEvent.id)).all()
    assert [(e.state, e.source) for e in events] == [
        (AgentState.AVAILABLE, "desk"), (AgentState.PAUSED, "desk"), (AgentState.LOGGED_OUT, "desk")]


def test_a_pause_needs_a_reason(logged_in, db):
    press(logged_in, "ready")
    page = press(logged_in, "pause", "  ").get_data(as_text=True)
    assert "请选择或填写暂停原因" in page and zhang(db).state is AgentState.AVAILABLE


def test_wrap_up_done_makes_the_agent_available(logged_in, db, settings, hotline_queue):
    call = ring(db, settings, hotline_queue)
    take(db, call)
    assert finish_call(db, zhang(db), 30, source="test")
    db.commit()
    page = press(logged_in, "wrap_up_done").get_data(as_text=True)
    assert zhang(db).state is AgentState.AVAILABLE and 'data-agent-state="available"' in page


def test_a_refused_transition_is_a_message_not_an_error(logged_in, db, settings, hotline_queue):
    ring(db, settings, hotline_queue)
    response = press(logged_in, "pause", "休息")
    assert response.status_code == 200
    assert "当前状态为“振铃”，无法执行此操作" in response.get_data(as_text=True)
    assert zhang(db).state is AgentState.RINGING
    page = press(logged_in, "wrap_up_done").get_data(as_text=True)
    assert "未作更改" in page and zhang(db).state is AgentState.RINGING


def test_state_forms_need_their_csrf_token_and_a_known_action(logged_in, db):
    assert logged_in.post("/desk/state", data={"action": "ready"}).status_code == 400
    page = logged_in.post("/desk/state", data={"action": "on_call", "csrf_token": desk_token(logged_in)},
                          follow_redirects=True).get_data(as_text=True)
    assert "无法识别该状态操作" in page and zhang(db).state is AgentState.LOGGED_OUT


def test_a_user_without_an_extension_is_told_why_they_cannot_be_ready(login_as):
    supervisor = login_as(Role.SUPERVISOR)
    page = supervisor.get("/desk/").get_data(as_text=True)
    assert "您还没有分机号" in page and 'data-action="ready"' not in page
    token = csrf_token(page)
    page = supervisor.post("/desk/state", data={"action": "ready", "csrf_token": token},
                           follow_redirects=True).get_data(as_text=True)
    assert "无法执行此操作" in page and 'data-agent-state="logged_out"' in page


# the caller card

def test_the_card_shows_the_caller_their_products_tickets_and_earlier_calls(logged_in, db, settings,
                                                                            hotline_queue, known_customer):
    earlier = queue_caller(db, settings, hotline_queue)
    mark_ended(db, earlier, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER)
    recording = open_recording(db, settings, earlier, "/tmp/earlier.wav")
    add_note(db, earlier.ticket, "通话转写 · 时长 01:00\n[00:01] 客户: 空调不制冷", kind=EventKind.TRANSCRIPT,
             data={"recording_id": recording.id})
    db.commit()
    call = ring(db, settings, hotline_queue)
    page = logged_in.get("/desk/").get_data(as_text=True)
    assert 'data-agent-state="ringing"' in page and f'data-call="{call.uid}"' in page
    assert "+8613800138000" in page and "李四" in page
    assert "KFR-35GW" in page and "SO-1001" in page
    assert call.ticket.number in page and "本次来电" in page
    assert "历史来电" in page and "空调不制冷" in page
    assert '<option selected value="inquiry">' in page and '<option selected value="P3">' in page


def test_the_card_stays_through_wrap_up_and_goes_when_the_agent_is_ready(logged_in, db, settings, hotline_queue):
    call = ring(db, settings, hotline_queue)
    take(db, call)
    finish_call(db, zhang(db), 30, source="test")
    db.commit()
    assert f'data-call="{call.uid}"' in logged_in.get("/desk/").get_data(as_text=True)
    page = press(logged_in, "ready").get_data(as_text=True)
    assert f'data-call="{call.uid}"' not in page and "暂无来电" in page


def test_the_live_transcript_shows_what_is_recognised_so_far(logged_in, db, settings, hotline_queue):
    call = ring(db, settings, hotline_queue)
    take(db, call)
    recording = open_recording(db, settings, call, "/tmp/live.wav")
    transcript = Transcript(recording=recording, state=TranscriptState.RUNNING, live=True)
    transcript.segments = [TranscriptSegment(channel=Channel.CUSTOMER, start=3.2, end=5.0, text="我的空调坏了"),
                           TranscriptSegment(channel=Channel.AGENT, start=65.0, end=66.0, text="请问型号是")]
    db.add(transcript)
    db.commit()
    page = logged_in.get("/desk/").get_data(as_text=True)
    assert "[00:03]" in page and "客户: 我的空调坏了" in page and "[01:05]" in page and "坐席: 请问型号是" in page


# the call's ticket

def ticket_form(client, **fields) -> dict[str, str]:
    data = {"type": "repair", "urgency": "urgent", "priority": "P2", "description": "空调不制冷，需上门维修"}
    return {**data, **fields, "csrf_token": desk_token(client)}


def test_the_agent_saves_the_ticket_and_the_trail_names_them(logged_in, db, settings, hotline_queue):
    call = ring(db, settings, hotline_queue)
    response = logged_in.post(f"/desk/calls/{call.uid}/ticket", data=ticket_form(logged_in),
                              follow_redirects=True)
    ticket = call.ticket
    assert response.status_code == 200 and f"工单 {ticket.number} 已保存" in response.get_data(as_text=True)
    db.expire_all()
    assert (ticket.type, ticket.urgency, ticket.priority) == (TicketType.REPAIR, Urgency.URGENT, Priority.P2)
    assert ticket.description == "空调不制冷，需上门维修"
    changes = {e.field: (e.old_value, e.new_value, e.actor.username) for e in ticket.events
               if e.kind is EventKind.CHANGED}
    assert changes["type"] == ("inquiry", "repair", "zhang")
    assert changes["urgency"] == ("normal", "urgent", "zhang")
    assert changes["priority"] == ("P3", "P2", "zhang")
    assert changes["description"][1:] == ("空调不制冷，需上门维修", "zhang")
    assert ticket.escalation_due_at is not None  # urgent: the clocks follow the new values


def test_bad_values_are_refused_with_the_agents_text_kept(logged_in, db, settings, hotline_queue):
    call = ring(db, settings, hotline_queue)
    before = db.scalar(select(TicketEvent.id).order_by(TicketEvent.id.desc()).limit(1))
    response = logged_in.post(f"/desk/calls/{call.uid}/ticket",
                              data=ticket_form(logged_in, priority="P9", description="客户说明了很多细节"))
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "工单未保存" in page and "客户说明了很多细节" in page and 'data-dirty="1"' in page
    assert '<option selected value="repair">' in page
    response = logged_in.post(f"/desk/calls/{call.uid}/ticket", data=ticket_form(logged_in, description=" "))
    assert response.status_code == 400 and "请填写客户反映的问题" in response.get_data(as_text=True)
    db.expire_all()
    assert call.ticket.type is TicketType.INQUIRY
    assert db.scalar(select(TicketEvent.id).order_by(TicketEvent.id.desc()).limit(1)) == before


def test_a_call_without_its_ticket_yet_gets_one_on_save(logged_in, db, settings, hotline_queue):
    call = ring(db, settings, hotline_queue, ticket=False)
    page = logged_in.get("/desk/").get_data(as_text=True)
    assert "+8613800138000" in page and "保存时将新建或关联工单" in page
    response = logged_in.post(f"/desk/calls/{call.uid}/ticket", data=ticket_form(logged_in, type="complaint"))
    assert response.status_code == 302
    db.expire_all()
    assert call.ticket is not None and call.ticket.type is TicketType.COMPLAINT
    assert ticket_for_call(db, settings, call) is call.ticket
    assert {e.field: e.actor_id for e in call.ticket.events if e.kind is EventKind.CHANGED}["type"] == zhang(db).user_id


def test_only_the_calls_agent_or_a_supervisor_may_save_its_ticket(logged_in, login_as, db, settings, hotline_queue):
    call = queue_caller(db, settings, hotline_queue)
    assert logged_in.post(f"/desk/calls/{call.uid}/ticket", data=ticket_form(logged_in)).status_code == 403
    assert logged_in.post("/desk/calls/nope/ticket", data=ticket_form(logged_in)).status_code == 404
    supervisor = login_as(Role.SUPERVISOR)
    assert supervisor.post(f"/desk/calls/{call.uid}/ticket", data=ticket_form(supervisor)).status_code == 302
    db.expire_all()
    assert call.ticket.type is TicketType.REPAIR


# the stream

def test_the_stream_pops_the_card_when_the_phone_rings(logged_in, open_stream, db, settings, hotline_queue,
                                                       known_customer):
    stream = open_stream(logged_in, "/desk/stream")
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    first = stream.wait_for(lambda event: True)
    assert set(first) == {"desk-state", "desk-card", "desk-transcript"}
    assert 'data-agent-state="logged_out"' in first["desk-state"] and "暂无来电" in first["desk-card"]

    call = ring(db, settings, hotline_queue)
    popped = stream.wait_for(lambda event: call.uid in event["desk-card"])
    assert "+8613800138000" in popped["desk-card"] and "李四" in popped["desk-card"]
    assert call.ticket.number in popped["desk-card"] and 'data-agent-state="ringing"' in popped["desk-state"]

    take(db, call)
    recording = open_recording(db, settings, call, "/tmp/live.wav")
    transcript = Transcript(recording=recording, state=TranscriptState.RUNNING, live=True)
    db.add(transcript)
    db.commit()
    for text in ("您好请讲", "我要报修"):
        db.add(TranscriptSegment(transcript=transcript, channel=Channel.CUSTOMER, start=len(text), end=9.0, text=text))
        db.commit()
        assert text in stream.wait_for(lambda event: text in event["desk-transcript"])["desk-transcript"]



# hold

def test_the_hold_button_asks_the_sip_side_to_hold_the_call(logged_in, db, settings, hotline_queue):
    call = ring(db, settings, hotline_queue)
    take(db, call)
    page = logged_in.get("/desk/").get_data(as_text=True)
    assert 'data-action="hold"' in page and "保持" in page
    requests = bus.call_requests(settings, timeout=0.1)
    next(requests)  # subscribed: as a hotline sip process is
    response = logged_in.post(f"/desk/calls/{call.uid}/hold", data={"action": "hold", "csrf_token": desk_token(logged_in)},
                              follow_redirects=True)
    assert response.status_code == 200
    heard = next(r for r in requests if r is not None)
    assert heard == {"uid": call.uid, "action": "hold", "target": ""}
    requests.close()


def test_hold_is_refused_for_a_call_not_connected(logged_in, db, settings, hotline_queue):
    call = ring(db, settings, hotline_queue)  # ringing, not bridged
    response = logged_in.post(f"/desk/calls/{call.uid}/hold", data={"action": "hold", "csrf_token": desk_token(logged_in)},
                              follow_redirects=True)
    assert "该通话未与您接通" in response.get_data(as_text=True)
    gone = logged_in.post("/desk/calls/nosuchcall/hold", data={"action": "hold", "csrf_token": desk_token(logged_in)})
    assert gone.status_code == 404


def test_the_transfer_box_offers_queues_and_agents_and_asks_the_sip_side(logged_in, db, settings, hotline_queue):
    add_user(db, "li", Role.AGENT, "agent-password-2", realm=settings.sip.realm, display_name="李四", extension="1002")
    call = ring(db, settings, hotline_queue)
    take(db, call)
    page = logged_in.get("/desk/").get_data(as_text=True)
    assert 'data-action="transfer"' in page and "李四 (1002)" in page and f"队列 {hotline_queue.name}" in page
    assert "张三 (1001)" not in page  # not to oneself
    requests = bus.call_requests(settings, timeout=0.1)
    next(requests)
    token = desk_token(logged_in)
    logged_in.post(f"/desk/calls/{call.uid}/transfer", data={"target": "1002", "csrf_token": token})
    assert next(r for r in requests if r is not None) == {"uid": call.uid, "action": "transfer", "target": "1002"}
    requests.close()
    refused = logged_in.post(f"/desk/calls/{call.uid}/transfer", data={"target": "9999", "csrf_token": token},
                             follow_redirects=True)
    assert "请选择转接的目标" in refused.get_data(as_text=True)
