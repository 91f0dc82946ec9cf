"""Tickets: the list and one ticket with its audit trail."""

from sqlalchemy import select

from models.callback import Callback, CallbackKind
from models.ticket import TicketStatus, TicketType, Urgency
from models.ticketing import change_ticket, create_ticket
from models.user import Role
from tests.webui.conftest import csrf_token


def test_ticket_list_and_history(logged_in, db, settings):
    ticket = create_ticket(db, settings, ticket_type=TicketType.COMPLAINT, urgency=Urgency.CRITICAL,
                           description="服务态度差", phone="+8613800138000")
    change_ticket(db, settings, ticket, None, status=TicketStatus.IN_PROGRESS)
    db.commit()
    listing = logged_in.get("/tickets/").get_data(as_text=True)
    assert ticket.number in listing and "投诉建议" in listing and "特急" in listing
    detail = logged_in.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert "服务态度差" in detail and "status: new → in_progress" in detail
    assert logged_in.get(f"/tickets/{ticket.number}?lang=en").get_data(as_text=True).count("complaint") >= 1


def test_unknown_ticket_is_404(logged_in):
    assert logged_in.get("/tickets/XX").status_code == 404


def resolve_page(client, number):
    return csrf_token(client.get(f"/tickets/{number}").get_data(as_text=True))


def test_an_agent_resolves_a_ticket_and_its_revisit_is_scheduled(logged_in, db, settings):
    ticket = create_ticket(db, settings, ticket_type=TicketType.COMPLAINT, description="安装师傅迟到",
                           phone="+8613800138000")
    db.commit()
    token = resolve_page(logged_in, ticket.number)
    response = logged_in.post(f"/tickets/{ticket.number}/resolve", data={"note": " 已道歉并补偿 ", "csrf_token": token})
    assert response.status_code == 302
    page = logged_in.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert "已办结" in page and "处理结果 / result: 已道歉并补偿" in page
    assert 'id="resolve"' not in page  # resolved: nothing more to resolve
    db.expire_all()
    assert ticket.status is TicketStatus.RESOLVED
    [callback] = db.scalars(select(Callback)).all()
    assert callback.kind is CallbackKind.COMPLAINT and callback.ticket_id == ticket.id
    assert callback.phone == "+8613800138000"


def test_a_resolve_without_a_note_is_refused_and_changes_nothing(logged_in, db, settings):
    ticket = create_ticket(db, settings, ticket_type=TicketType.REPAIR, description="不制冷", phone="+8613800138000")
    db.commit()
    token = resolve_page(logged_in, ticket.number)
    response = logged_in.post(f"/tickets/{ticket.number}/resolve", data={"note": "   ", "csrf_token": token})
    assert response.status_code == 400
    assert 'data-error="note"' in response.get_data(as_text=True)
    db.expire_all()
    assert ticket.status is TicketStatus.NEW


def test_qa_cannot_resolve_tickets(login_as, db, settings):
    ticket = create_ticket(db, settings, ticket_type=TicketType.REPAIR, description="不制冷", phone="+8613800138000")
    db.commit()
    qa = login_as(Role.QA)
    page = qa.get(f"/tickets/{ticket.number}").get_data(as_text=True)
    assert 'id="resolve"' not in page
    response = qa.post(f"/tickets/{ticket.number}/resolve", data={"note": "x", "csrf_token": csrf_token(page)})
    assert response.status_code == 403
