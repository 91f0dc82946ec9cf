"""The ticket rules: numbers, deadlines, high-frequency flag, audit trail, refusal to delete."""

from __future__ import annotations

import multiprocessing
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DatabaseError

from config import load_settings
from models.audit import ImmutableRecordError
from models.db import session_scope
from models.directory import add_customer
from models.ticket import EventKind, Priority, Ticket, TicketEvent, TicketStatus, TicketType, Urgency
from models.ticketing import add_note, change_ticket, create_ticket, ticket_as_dict
from models.user import Role
from models.accounts import add_user

# Monday 2026-11-23 10:00 in Shanghai.
MONDAY = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)


def new_ticket(db, settings, ticket_type=TicketType.INQUIRY, now=MONDAY, **kw) -> Ticket:
    return create_ticket(db, settings, ticket_type=ticket_type, now=now, description="屏幕不亮", **kw)


def test_number_is_prefix_local_date_and_daily_sequence(db, settings):
    first = new_ticket(db, settings)
    second = new_ticket(db, settings)
    repair = new_ticket(db, settings, TicketType.REPAIR)
    assert (first.number, second.number, repair.number) == ("TS20261123001", "TS20261123002", "SS20261123001")


def test_sequence_restarts_each_local_day(db, settings):
    new_ticket(db, settings)
    # 16:30 UTC on the 23rd is already the 24th in Shanghai.
    next_day = new_ticket(db, settings, now=datetime(2026, 11, 23, 16, 30, tzinfo=timezone.utc))
    assert next_day.number == "TS20261124001"


def test_prefixes_are_settings(db, settings):
    settings.tickets.prefix_service = "AS"
    assert new_ticket(db, settings, TicketType.COMPLAINT).number == "AS20261123001"


@pytest.mark.parametrize(
    ("ticket_type", "priority", "response_hours", "resolution_hours"),
    [
        (TicketType.INQUIRY, Priority.P1, 2, 24),
        (TicketType.INQUIRY, Priority.P3, 2, 72),  # the type's 2 h is stricter than P3's 8 h
        (TicketType.REPAIR, Priority.P1, 2, 24),  # P1's 2 h is stricter than repair's 4 h
        (TicketType.REPAIR, Priority.P2, 4, 48),
        (TicketType.REPAIR, Priority.P3, 4, 72),
        (TicketType.COMPLAINT, Priority.P3, 8, 72),
        (TicketType.COMPLAINT, Priority.P2, 4, 48),
        (TicketType.RETURN, Priority.P3, 8, 72),  # 1 working day is longer than 8 h
    ],
)
def test_deadlines_take_the_stricter_rule(db, settings, ticket_type, priority, response_hours, resolution_hours):
    ticket = new_ticket(db, settings, ticket_type, priority=priority)
    assert ticket.response_due_at - ticket.created_at == timedelta(hours=response_hours)
    assert ticket.resolution_due_at - ticket.created_at == timedelta(hours=resolution_hours)
    assert ticket.receipt_due_at - ticket.created_at == timedelta(hours=1)
    assert ticket.progress_due_at - ticket.created_at == timedelta(hours=4)


def test_return_responds_within_one_working_day_over_a_weekend(db, settings):
    settings.tickets.response_hours_p1 = 1000  # leave only the type's clock in force
    friday = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)
    ticket = new_ticket(db, settings, TicketType.RETURN, now=friday, priority=Priority.P1)
    assert ticket.response_due_at == friday + timedelta(days=3)  # Monday, same time


@pytest.mark.parametrize(("urgency", "priority", "escalates"), [
    (Urgency.NORMAL, Priority.P3, False), (Urgency.URGENT, Priority.P2, True), (Urgency.CRITICAL, Priority.P1, True),
])
def test_urgency_sets_default_priority_and_supervisor_escalation(db, settings, urgency, priority, escalates):
    ticket = new_ticket(db, settings, urgency=urgency)
    assert ticket.priority is priority
    if escalates:
        assert ticket.escalation_due_at - ticket.created_at == timedelta(minutes=10)
    else:
        assert ticket.escalation_due_at is None


def test_ticket_is_filled_from_the_customer_record(db, settings):
    from datetime import date

    from models.customer import CustomerProduct

    customer = add_customer(db, "王先生", ["138 0013 8000"], "CN")
    customer.products.append(CustomerProduct(model="HX-200", order_number="O-1", purchase_date=date(2026, 1, 5)))
    ticket = new_ticket(db, settings, customer=customer)
    assert (ticket.customer_name, ticket.product_model, ticket.order_number) == ("王先生", "HX-200", "O-1")


def test_same_problem_more_than_three_times_in_30_days_is_high_frequency(db, settings):
    customer = add_customer(db, "李女士", ["13900139000"], "CN")
    flags = [
        new_ticket(db, settings, TicketType.REPAIR, customer=customer, product_model="HX-200",
                   now=MONDAY + timedelta(days=day)).high_frequency
        for day in (0, 5, 10, 15)
    ]
    other_problem = new_ticket(db, settings, TicketType.REPAIR, customer=customer, product_model="K9",
                               now=MONDAY + timedelta(days=16))
    much_later = new_ticket(db, settings, TicketType.REPAIR, customer=customer, product_model="HX-200",
                            now=MONDAY + timedelta(days=60))
    assert flags == [False, False, False, True]
    assert not other_problem.high_frequency and not much_later.high_frequency


def test_every_change_writes_an_event_with_who_old_and_new(db, settings):
    agent = add_user(db, "zhang", Role.AGENT, "secret-pass", realm="hotline")
    ticket = new_ticket(db, settings)
    change_ticket(db, settings, ticket, agent.id, status=TicketStatus.ACKNOWLEDGED, priority=Priority.P1)
    events = {e.field: e for e in ticket.events if e.kind is EventKind.CHANGED}
    assert events["status"].old_value == "new" and events["status"].new_value == "acknowledged"
    assert events["priority"].old_value == "P3" and events["priority"].new_value == "P1"
    assert events["status"].actor_id == agent.id
    assert ticket.acknowledged_at is not None
    assert ticket.resolution_due_at - ticket.created_at == timedelta(hours=24)  # clocks follow the priority
    assert ticket.events[0].kind is EventKind.CREATED


def test_a_change_made_outside_the_service_is_audited_too(db, settings):
    ticket = new_ticket(db, settings)
    ticket.description = "改过的描述"
    db.flush()
    event = ticket.events[-1]
    assert (event.kind, event.field, event.old_value, event.new_value, event.actor_id) == (
        EventKind.CHANGED, "description", "屏幕不亮", "改过的描述", None)


def test_unknown_fields_cannot_be_changed(db, settings):
    ticket = new_ticket(db, settings)
    with pytest.raises(ValueError, match="number"):
        change_ticket(db, settings, ticket, None, number="TS1")


def test_notes_append_to_the_trail(db, settings):
    ticket = new_ticket(db, settings)
    add_note(db, ticket, "客户已确认", data={"source": "phone"})
    assert ticket.events[-1].text == "客户已确认" and ticket.events[-1].kind is EventKind.NOTE


def test_the_ticket_lists_its_handlers_the_owner_first(db, settings):
    from models.calllog import log_inbound, mark_bridged, record_transfer, ticket_for_call
    from models.call import TransferKind

    zhang = add_user(db, "zhang", Role.AGENT, "agent-pass-1", realm="hotline", extension="1001")
    li = add_user(db, "li", Role.AGENT, "agent-pass-2", realm="hotline", extension="1002")
    call = log_inbound(db, settings, caller="13800138000", callee="1000", sip_call_id="c1", at=MONDAY)
    ticket = ticket_for_call(db, settings, call, at=MONDAY)
    assert ticket_as_dict(ticket)["handlers"] == []
    mark_bridged(db, call, zhang, MONDAY + timedelta(seconds=10))
    record_transfer(db, call, TransferKind.BLIND, "zhang", "li", MONDAY + timedelta(seconds=70))
    mark_bridged(db, call, li, MONDAY + timedelta(seconds=70))
    shown = ticket_as_dict(ticket)
    assert shown["handlers"] == [{"user": "zhang", "since": "2026-11-23T02:00:10+00:00"},
                                 {"user": "li", "since": "2026-11-23T02:01:10+00:00"}]
    assert shown["owner_id"] == zhang.id


def test_tickets_and_events_are_never_deleted_through_the_orm(db, settings):
    ticket = new_ticket(db, settings)
    db.commit()
    db.delete(ticket)
    with pytest.raises(ImmutableRecordError):
        db.flush()
    db.rollback()
    db.delete(ticket.events[0])
    with pytest.raises(ImmutableRecordError):
        db.flush()
    db.rollback()
    ticket.events[0].text = "rewritten"
    with pytest.raises(ImmutableRecordError):
        db.flush()


@pytest.mark.parametrize("statement", [
    delete(Ticket), delete(TicketEvent), update(TicketEvent).values(text="rewritten"),
])
def test_database_refuses_deletes_that_bypass_the_orm(db, settings, statement):
    new_ticket(db, settings)
    db.commit()
    with pytest.raises(DatabaseError, match="not allowed"):
        db.execute(statement)
    db.rollback()
    assert db.scalar(select(text("count(*)")).select_from(Ticket)) == 1


def _create_tickets(count: int, barrier) -> list[str]:  # type: ignore[no-untyped-def]
    settings = load_settings()
    barrier.wait()
    numbers = []
    for _ in range(count):
        with session_scope(settings) as session:
            numbers.append(create_ticket(session, settings, ticket_type=TicketType.REPAIR, now=MONDAY).number)
    return numbers


@pytest.mark.postgres
def test_two_processes_creating_tickets_at_once_never_share_a_number(postgres_database, hotline_env, monkeypatch):
    monkeypatch.setenv("HOTLINE_HOME", hotline_env["HOTLINE_HOME"])
    monkeypatch.setenv("HOTLINE_CONFIG", hotline_env["HOTLINE_CONFIG"])
    monkeypatch.setenv("HOTLINE_DATABASE_URL", postgres_database)
    from models.db import upgrade

    upgrade(load_settings())
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(2)
    with context.Pool(2) as pool:
        results = [pool.apply_async(_create_tickets, (40, barrier)) for _ in range(2)]
        numbers = [n for r in results for n in r.get(timeout=120)]
    assert len(set(numbers)) == 80
    assert sorted(numbers) == [f"SS20261123{i:03d}" for i in range(1, 81)]
