"""Tickets: the list and one ticket with its audit trail."""

from models.ticket import TicketStatus, TicketType, Urgency
from models.ticketing import change_ticket, create_ticket


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
