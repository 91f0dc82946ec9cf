"""The callback rules: windows, calling hours, claims, retries, answers — a week simulated with an injected clock."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from models.callback import AttemptOutcome, Callback, CallbackKind, CallbackMode, CallbackState, Satisfaction
from models.callbacks import (
    CallbackError, automatic_due, claim, customer_zone, finish_attempt, give_up, is_allowed, mark_due, next_allowed,
    record_answers, refusal, reschedule, resolve_ticket, schedule,
)
from models.ticket import EventKind, TicketStatus, TicketType
from models.ticketing import create_ticket

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)
PHONE = "+8613800138000"


def ticket(db, settings, ticket_type=TicketType.REPAIR, now=MONDAY_10):
    return create_ticket(db, settings, ticket_type=ticket_type, now=now, description="洗衣机不转", phone=PHONE)


def test_resolving_a_ticket_schedules_the_satisfaction_revisit_within_24_hours(db, settings):
    repaired = ticket(db, settings)
    callback = resolve_ticket(db, settings, repaired, "更换了电机", now=MONDAY_10)
    assert repaired.status is TicketStatus.RESOLVED
    assert callback.kind is CallbackKind.SATISFACTION and callback.mode is CallbackMode.AUTO
    assert callback.due_by - callback.due_from == timedelta(hours=24)
    assert callback.next_attempt_at == MONDAY_10 and callback.phone == PHONE
    assert any(e.kind is EventKind.CALLBACK for e in repaired.events)


def test_a_resolved_complaint_gets_the_complaint_revisit_within_7_days(db, settings):
    callback = resolve_ticket(db, settings, ticket(db, settings, TicketType.COMPLAINT), "已道歉并退款", now=MONDAY_10)
    assert callback.kind is CallbackKind.COMPLAINT
    assert callback.due_by - callback.due_from == timedelta(days=7)


def test_resolving_twice_keeps_one_callback(db, settings):
    repaired = ticket(db, settings)
    first = resolve_ticket(db, settings, repaired, "修好了", now=MONDAY_10)
    again = resolve_ticket(db, settings, repaired, "再次确认", now=MONDAY_10 + timedelta(hours=1))
    assert again.id == first.id
    assert db.scalars(select(Callback)).all() == [first]


def test_a_resolution_needs_a_note(db, settings):
    with pytest.raises(CallbackError, match="note"):
        resolve_ticket(db, settings, ticket(db, settings), "  ", now=MONDAY_10)


def test_a_time_at_night_moves_to_the_next_morning_and_holidays_are_skipped(settings):
    settings.general.holidays = [date(2026, 11, 24)]
    night = datetime(2026, 11, 23, 22, 30, tzinfo=SHANGHAI)
    assert next_allowed(night, settings, SHANGHAI) == datetime(2026, 11, 25, 9, 0, tzinfo=SHANGHAI)
    early = datetime(2026, 11, 23, 6, 0, tzinfo=SHANGHAI)
    assert next_allowed(early, settings, SHANGHAI) == datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)
    assert is_allowed(MONDAY_10, settings, SHANGHAI)


def test_the_customers_time_zone_comes_from_their_number(settings):
    assert customer_zone("+12125550123", settings).key == "America/New_York"
    assert customer_zone(PHONE, settings).key == "Asia/Shanghai"
    assert customer_zone("1001", settings).key == settings.general.timezone  # an extension


def test_a_window_that_cannot_fit_calling_hours_is_flagged_and_called_first_thing(db, settings):
    late = datetime(2026, 11, 23, 21, 0, tzinfo=SHANGHAI)
    callback = schedule(db, settings, kind=CallbackKind.SUPERVISOR, phone=PHONE, now=late)
    assert callback.flag and "calling hours" in callback.flag
    assert callback.next_attempt_at == datetime(2026, 11, 24, 9, 0, tzinfo=SHANGHAI)


def test_bad_numbers_are_refused_and_the_do_not_call_list_is_kept(db, settings):
    with pytest.raises(CallbackError, match="invalid number"):
        schedule(db, settings, kind=CallbackKind.CUSTOMER_REQUESTED, phone="call me maybe", now=MONDAY_10)
    settings.callbacks.do_not_call = ["13800138000"]
    callback = schedule(db, settings, kind=CallbackKind.CUSTOMER_REQUESTED, phone=PHONE, now=MONDAY_10)
    assert refusal(callback, settings) is AttemptOutcome.DO_NOT_CALL


def test_an_attempt_is_claimed_once(db, settings):
    callback = schedule(db, settings, kind=CallbackKind.CUSTOMER_REQUESTED, phone=PHONE, now=MONDAY_10)
    first = claim(db, callback.id, 1, by="a", now=MONDAY_10)
    assert first is not None
    assert claim(db, callback.id, 1, by="b", now=MONDAY_10) is None  # the same job run twice
    assert claim(db, callback.id, 2, by="b", now=MONDAY_10) is None  # the next attempt, while this one dials
    db.refresh(callback)
    assert callback.state is CallbackState.DIALLING and callback.attempts == 1


def test_no_answer_is_retried_after_the_interval_then_unreachable(db, settings):
    callback = schedule(db, settings, kind=CallbackKind.SATISFACTION, phone=PHONE, now=MONDAY_10)
    now = MONDAY_10
    for number in range(1, settings.callbacks.max_attempts + 1):
        attempt = claim(db, callback.id, number, by="t", now=now)
        assert attempt is not None
        finish_attempt(db, settings, attempt, AttemptOutcome.NO_ANSWER, now=now)
        if number < settings.callbacks.max_attempts:
            assert callback.state is CallbackState.SCHEDULED
            assert callback.next_attempt_at == now + timedelta(minutes=settings.callbacks.retry_minutes)
            now = callback.next_attempt_at
    assert callback.state is CallbackState.UNREACHABLE and callback.outcome == "no_answer"


def test_staff_not_answering_does_not_use_up_the_customers_attempts(db, settings):
    settings.callbacks.max_attempts = 1
    callback = schedule(db, settings, kind=CallbackKind.SUPERVISOR, phone=PHONE, now=MONDAY_10)
    finish_attempt(db, settings, claim(db, callback.id, 1, by="t", now=MONDAY_10), AttemptOutcome.STAFF_UNAVAILABLE)
    assert callback.state is CallbackState.DUE
    finish_attempt(db, settings, claim(db, callback.id, 2, by="t", now=MONDAY_10), AttemptOutcome.BUSY)
    assert callback.state is CallbackState.UNREACHABLE


def test_dissatisfied_flags_the_ticket_and_schedules_the_supervisor_within_2_hours(db, settings):
    repaired = ticket(db, settings)
    revisit = resolve_ticket(db, settings, repaired, "修好了", now=MONDAY_10)
    supervisor = record_answers(db, settings, revisit, satisfaction=Satisfaction.DISSATISFIED,
                                answers={"improve": "上门太慢"}, now=MONDAY_10)
    assert supervisor is not None and supervisor.kind is CallbackKind.SUPERVISOR
    assert supervisor.mode is CallbackMode.STAFF and supervisor.due_by - supervisor.due_from == timedelta(hours=2)
    assert repaired.improvement_flagged_at == MONDAY_10
    assert revisit.score == 2 and revisit.survey_answers == {"improve": "上门太慢"}


def test_satisfied_needs_no_supervisor_but_a_low_staff_score_does(db, settings):
    revisit = resolve_ticket(db, settings, ticket(db, settings), "修好了", now=MONDAY_10)
    assert record_answers(db, settings, revisit, satisfaction=Satisfaction.SATISFIED, now=MONDAY_10) is None
    assert record_answers(db, settings, revisit, satisfaction=Satisfaction.SATISFIED, score=3, now=MONDAY_10)


def test_reschedule_stays_inside_the_window_and_calling_hours(db, settings):
    callback = schedule(db, settings, kind=CallbackKind.SATISFACTION, phone=PHONE, now=MONDAY_10)
    with pytest.raises(CallbackError, match="outside the window"):
        reschedule(db, settings, callback, MONDAY_10 + timedelta(days=2))
    with pytest.raises(CallbackError, match="calling hours"):
        reschedule(db, settings, callback, MONDAY_10 + timedelta(hours=12))
    reschedule(db, settings, callback, MONDAY_10 + timedelta(hours=3))
    assert callback.next_attempt_at == MONDAY_10 + timedelta(hours=3)
    give_up(db, callback, CallbackState.UNREACHABLE, reason="空号")
    assert callback.state is CallbackState.UNREACHABLE
    with pytest.raises(CallbackError):
        give_up(db, callback, CallbackState.CANCELLED)


def test_a_simulated_week_calls_everyone_inside_their_window_never_at_night(db, settings):
    """Tickets resolved around the clock for a week; the dialler looks every two minutes of simulated time."""
    rng = random.Random(7)
    start = datetime(2026, 11, 23, 0, 0, tzinfo=SHANGHAI)
    resolutions = sorted(start + timedelta(minutes=rng.randrange(7 * 24 * 60)) for _ in range(60))
    outcomes = [AttemptOutcome.COMPLETED, AttemptOutcome.NO_ANSWER, AttemptOutcome.BUSY]
    dialled: dict[int, list[datetime]] = {}
    now = start
    while now < start + timedelta(days=9):
        while resolutions and resolutions[0] <= now:
            kind = rng.choice([TicketType.REPAIR, TicketType.COMPLAINT])
            resolve_ticket(db, settings, ticket(db, settings, kind, now=resolutions.pop(0)), "处理完毕", now=now)
        mark_due(db, now)
        for due in automatic_due(db, now):
            attempt = claim(db, due.callback_id, due.number, by="sim", now=now)
            assert attempt is not None
            dialled.setdefault(due.callback_id, []).append(now)
            finish_attempt(db, settings, attempt, rng.choice(outcomes), now=now)
        now += timedelta(minutes=2)
    callbacks = db.scalars(select(Callback)).all()
    assert len(callbacks) == 60
    hours = settings.callbacks
    for callback in callbacks:
        assert callback.state in (CallbackState.DONE, CallbackState.UNREACHABLE)
        times = dialled[callback.id]
        assert all(hours.calling_hours_start <= t.astimezone(SHANGHAI).time() < hours.calling_hours_end for t in times)
        assert times[0] <= callback.due_by, "the first attempt falls inside the window"
        assert all(b - a >= timedelta(minutes=hours.retry_minutes) for a, b in zip(times, times[1:]))
        assert len(times) <= hours.max_attempts


def test_a_dialect_customer_is_called_back_by_staff_with_that_skill(db, settings):
    from models.calllog import log_inbound, mark_state
    from models.call import CallState
    from models.queues import add_queue

    cantonese = add_queue(db, "粤语", numbers=["1001"], skills=["粤语:2"])
    repaired = ticket(db, settings)
    call = log_inbound(db, settings, caller=PHONE, callee="1001", sip_call_id="x", at=MONDAY_10)
    call.queue, call.ticket = cantonese, repaired
    mark_state(db, call, CallState.QUEUED, MONDAY_10)
    callback = resolve_ticket(db, settings, repaired, "修好了", now=MONDAY_10)
    assert callback.skill == "粤语:2"


def test_a_caller_served_live_gives_up_the_place_they_kept(db, settings):
    from models.callbacks import SERVED_LIVE, keep_place, served_live

    kept = keep_place(db, settings, phone="13800138000", queue_id=None, queued_at=MONDAY_10, now=MONDAY_10)
    other = keep_place(db, settings, phone="13900139000", queue_id=None, queued_at=MONDAY_10, now=MONDAY_10)
    revisit = schedule(db, settings, kind=CallbackKind.CUSTOMER_REQUESTED, phone=PHONE, now=MONDAY_10)
    assert served_live(db, settings, "+86 138-0013-8000") == [kept.id]  # the same number, written otherwise
    assert kept.state is CallbackState.CANCELLED and kept.outcome == SERVED_LIVE
    assert other.state is CallbackState.SCHEDULED and revisit.state is CallbackState.SCHEDULED
    assert served_live(db, settings, "anonymous") == []
