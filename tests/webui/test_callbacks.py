"""The callback list (回访列表): who sees which callbacks in what order; call now, reschedule, unreachable, the survey."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from markupsafe import escape
from sqlalchemy import select

from models.accounts import add_user
from models.base import utcnow
from models.callback import AttemptOutcome, Callback, CallbackKind, CallbackMode, CallbackState, Satisfaction
from models.callbacks import answered, claim, dialled, finish_attempt, record_answers, resolve_ticket, schedule
from models.calllog import log_outbound, open_recording
from models.ticket import EventKind, Ticket, TicketType
from models.ticketing import create_ticket
from models.user import Role, User
from tests.webui.conftest import PASSWORD, csrf_token, log_in
from workers.connection import DIALLER_QUEUE, queue

LIST = "/callbacks/"
PHONE = "+8613800138000"


@pytest.fixture(autouse=True)
def all_day(settings):
    """Calls allowed at any hour, so the tests pass whenever they run."""
    settings.callbacks.calling_hours_start = time(0, 0)
    settings.callbacks.calling_hours_end = time(23, 59, 59)


@pytest.fixture
def wang(app, db, settings) -> User:
    """A revisit staff member with a softphone, who speaks Cantonese (粤语, level 2)."""
    user = add_user(db, "wang", Role.REVISIT, PASSWORD, realm=settings.sip.realm, display_name="王回访",
                    extension="1101", skills=["粤语:2"])
    db.commit()
    return user


@pytest.fixture
def revisit(app, wang):
    return log_in(app.test_client(), "wang")


@pytest.fixture
def supervisor(login_as):
    return login_as(Role.SUPERVISOR)


def callback(db, settings, *, kind=CallbackKind.SATISFACTION, phone=PHONE, earliest=None, latest=None, **options):
    made = schedule(db, settings, kind=kind, phone=phone, earliest=earliest, latest=latest, **options)
    db.commit()
    return made


def repaired_ticket(db, settings) -> Ticket:
    made = create_ticket(db, settings, ticket_type=TicketType.REPAIR, description="洗衣机不转", phone=PHONE)
    db.commit()
    return made


def revisit_of(db, settings, ticket: Ticket) -> Callback:
    """The ticket resolved: its satisfaction revisit, due now."""
    made = resolve_ticket(db, settings, ticket, "更换了电机")
    db.commit()
    return made


def talking(db, callback_: Callback, staff: User | None = None) -> None:
    """The customer has answered: the attempt claimed and dialled, the call connected."""
    attempt = claim(db, callback_.id, callback_.attempts + 1, by="test")
    dialled(db, attempt, f"uid-{callback_.id}", staff_id=staff.id if staff else None)
    answered(db, attempt)
    db.commit()
    db.refresh(callback_)


def shown(client, url: str = LIST) -> list[int]:
    """The callbacks of the list, top to bottom."""
    return [int(found) for found in re.findall(r'<tr data-callback="(\d+)"', client.get(url).get_data(as_text=True))]


def post(client, url: str, **fields: str):
    token = csrf_token(client.get(url.rsplit("/", 1)[0]).get_data(as_text=True))
    return client.post(url, data={**fields, "csrf_token": token})


def error_at(page: str, field: str) -> str | None:
    found = re.search(rf'data-error="{field}">([^<]*)<', page)
    return found.group(1) if found else None


def stored(db, callback_: Callback) -> Callback:
    db.expire_all()
    return db.get(Callback, callback_.id)


def local_input(at: datetime, settings) -> str:
    return at.astimezone(ZoneInfo(settings.general.timezone)).strftime("%Y-%m-%dT%H:%M")


# who may open it

def test_revisit_staff_and_supervisors_open_the_list_agents_do_not_anonymous_users_log_in(client, revisit,
                                                                                          supervisor, logged_in):
    assert revisit.get(LIST).status_code == 200
    assert supervisor.get(LIST).status_code == 200
    assert logged_in.get(LIST).status_code == 403  # zhang, an agent
    anonymous = client.application.test_client()
    response = anonymous.get(LIST)
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_the_nav_links_the_list_for_revisit_staff_not_for_agents(revisit, logged_in):
    assert 'href="/callbacks/">回访</a>' in revisit.get("/calls/").get_data(as_text=True)
    assert 'href="/callbacks/"' not in logged_in.get("/calls/").get_data(as_text=True)


def test_the_list_is_in_chinese_first_and_in_english_on_request(db, settings, revisit):
    callback(db, settings)
    assert "待回访" in revisit.get(LIST).get_data(as_text=True)
    english = revisit.get(f"{LIST}?lang=en").get_data(as_text=True)
    assert "Callbacks to make" in english and "Satisfaction revisit" in english


# the list

def test_overdue_callbacks_come_first_then_the_others_by_deadline(db, settings, revisit):
    now = utcnow()
    def between(phone: str, start: int, end: int) -> Callback:
        return callback(db, settings, phone=phone, earliest=now + timedelta(hours=start),
                        latest=now + timedelta(hours=end))

    late = between("13800000001", 2, 10)
    soon = between("13800000002", -1, 2)
    overdue = between("13800000003", -5, -1)
    middle = between("13800000004", 1, 5)
    done = callback(db, settings, phone="13800000005")
    done.state = CallbackState.DONE
    db.commit()

    assert shown(revisit) == [overdue.id, soon.id, middle.id, late.id]
    page = revisit.get(LIST).get_data(as_text=True)
    states = dict(re.findall(r'<tr data-callback="(\d+)".*?data-state="(\w+)"', page, re.S))
    assert states == {str(overdue.id): "overdue", str(soon.id): "due", str(middle.id): "scheduled",
                      str(late.id): "scheduled"}
    assert "已超期" in page and "满意度回访" in page


def test_a_row_shows_the_ticket_the_window_in_local_time_and_the_last_attempt(db, settings, revisit):
    ticket = repaired_ticket(db, settings)
    made = revisit_of(db, settings, ticket)
    attempt = claim(db, made.id, 1, by="test")
    finish_attempt(db, settings, attempt, AttemptOutcome.NO_ANSWER)
    db.commit()
    page = revisit.get(LIST).get_data(as_text=True)
    row = page.split(f'data-callback="{made.id}"')[1].split("</tr>")[0]
    assert f'href="/tickets/{ticket.number}"' in row
    assert made.due_by.astimezone(ZoneInfo(settings.general.timezone)).strftime("%m-%d %H:%M") in row
    assert "无应答" in row and PHONE in row


def test_revisit_staff_see_the_callbacks_of_their_skills_and_their_own(db, settings, wang, revisit, supervisor):
    li = add_user(db, "li", Role.REVISIT, PASSWORD, realm=settings.sip.realm)
    db.commit()
    anyone = callback(db, settings, phone="13800000001")
    cantonese = callback(db, settings, phone="13800000002", skill="粤语")
    fluent_only = callback(db, settings, phone="13800000003", skill="粤语:3")
    hokkien = callback(db, settings, phone="13800000004", skill="闽南语")
    theirs = callback(db, settings, phone="13800000005", assignee_id=li.id)
    mine = callback(db, settings, phone="13800000006", skill="闽南语", assignee_id=wang.id)
    supervisors = callback(db, settings, kind=CallbackKind.SUPERVISOR, phone="13800000007")
    mine_too = callback(db, settings, kind=CallbackKind.SUPERVISOR, phone="13800000008", assignee_id=wang.id)

    assert set(shown(revisit)) == {anyone.id, cantonese.id, mine.id, mine_too.id}
    assert set(shown(supervisor)) == {c.id for c in (anyone, cantonese, fluent_only, hokkien, theirs, mine,
                                                     supervisors, mine_too)}
    assert revisit.get(f"{LIST}{hokkien.id}").status_code == 403
    assert revisit.get(f"{LIST}{supervisors.id}").status_code == 403
    assert revisit.get(f"{LIST}{mine.id}").status_code == 200
    assert revisit.get(f"{LIST}999999").status_code == 404


def test_finished_automatic_surveys_are_listed_with_their_recording(db, settings, revisit):
    made = revisit_of(db, settings, repaired_ticket(db, settings))
    attempt = claim(db, made.id, 1, by="test")
    call = log_outbound(db, settings, number=PHONE, caller="1000", sip_call_id="survey-1", callback_id=made.id)
    recording = open_recording(db, settings, call, "/tmp/survey-1.wav")
    dialled(db, attempt, call.uid)
    answered(db, attempt)
    finish_attempt(db, settings, attempt, AttemptOutcome.COMPLETED)
    record_answers(db, settings, made, satisfaction=Satisfaction.VERY_SATISFIED,
                   answers={"key": "1", "keys": "1", "call_uid": call.uid})
    db.commit()

    page = revisit.get(LIST).get_data(as_text=True)
    results = page.split('id="survey-results"')[1]
    assert f'data-result="{made.id}"' in results and "非常满意" in results and "(5/5)" in results
    assert f'src="/calls/recordings/{recording.id}.wav"' in results
    assert made.id not in shown(revisit)  # done: no longer to make
    detail = revisit.get(f"{LIST}{made.id}").get_data(as_text=True)
    assert f'src="/calls/recordings/{recording.id}.wav"' in detail.split('id="attempts"')[1]


# the callback's page

def test_the_page_shows_the_ticket_and_the_customers_history(db, settings, revisit):
    earlier = create_ticket(db, settings, ticket_type=TicketType.INQUIRY, description="咨询安装", phone=PHONE)
    ticket = repaired_ticket(db, settings)
    call = log_outbound(db, settings, number=PHONE, caller="1000", sip_call_id="earlier-call")
    call.ticket = ticket
    made = revisit_of(db, settings, ticket)
    page = revisit.get(f"{LIST}{made.id}").get_data(as_text=True)
    assert "洗衣机不转" in page.split('id="ticket-summary"')[1]
    history = page.split('id="history-tickets"')[1]
    assert earlier.number in history and ticket.number in history
    assert f"<td>{call.id}</td>" in page.split('id="history-calls"')[1]


# call now

def test_call_now_queues_the_staff_first_call_on_the_dialler_queue(db, settings, wang, revisit):
    made = callback(db, settings, mode=CallbackMode.STAFF, earliest=utcnow() + timedelta(hours=1))
    response = post(revisit, f"{LIST}{made.id}/call")
    assert response.status_code == 302
    jobs = queue(settings, DIALLER_QUEUE).jobs
    assert [job.args for job in jobs] == [(made.id, 1, wang.id)]
    assert jobs[0].func_name == "workers.dialler.dial_callback"
    assert stored(db, made).state is CallbackState.DUE
    page = revisit.get(f"{LIST}{made.id}").get_data(as_text=True)
    assert "1101" in page and "先振铃" in page


def test_call_now_without_an_extension_is_refused(db, settings, login_as):
    no_phone = login_as(Role.REVISIT)
    made = callback(db, settings, earliest=utcnow() + timedelta(hours=1))
    response = post(no_phone, f"{LIST}{made.id}/call")
    page = no_phone.get(response.headers["Location"]).get_data(as_text=True)
    assert "您需要一个分机" in page
    assert queue(settings, DIALLER_QUEUE).jobs == []
    assert stored(db, made).state is CallbackState.SCHEDULED


def test_call_now_on_a_holiday_is_refused_and_nothing_is_saved(db, settings, revisit):
    made = callback(db, settings, earliest=utcnow() + timedelta(hours=1))
    settings.general.holidays = [datetime.now(ZoneInfo("Asia/Shanghai")).date()]
    page = post(revisit, f"{LIST}{made.id}/call").headers["Location"]
    assert "节假日" in revisit.get(page).get_data(as_text=True)
    assert queue(settings, DIALLER_QUEUE).jobs == []
    assert stored(db, made).state is CallbackState.SCHEDULED


# reschedule and unreachable

def test_reschedule_inside_the_window_moves_the_next_attempt(db, settings, revisit):
    made = callback(db, settings)  # the next 24 hours
    at = (utcnow() + timedelta(hours=3)).replace(second=0, microsecond=0)
    response = post(revisit, f"{LIST}{made.id}/reschedule", at=local_input(at, settings))
    assert response.status_code == 302
    again = stored(db, made)
    assert again.next_attempt_at == at and again.state is CallbackState.SCHEDULED
    assert "已改期" in revisit.get(response.headers["Location"]).get_data(as_text=True)


def test_a_time_outside_the_window_is_refused_at_the_field_and_kept(db, settings, revisit):
    made = callback(db, settings)
    before = made.next_attempt_at
    typed = local_input(utcnow() + timedelta(hours=30), settings)
    response = post(revisit, f"{LIST}{made.id}/reschedule", at=typed)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "不在回访时限" in error_at(page, "at")
    assert f'value="{typed}"' in page
    assert stored(db, made).next_attempt_at == before

    response = post(revisit, f"{LIST}{made.id}/reschedule", at="tomorrow")
    assert response.status_code == 400 and error_at(response.get_data(as_text=True), "at")


def test_mark_unreachable_ends_the_callback_with_the_reason(db, settings, revisit):
    ticket = repaired_ticket(db, settings)
    made = revisit_of(db, settings, ticket)
    response = post(revisit, f"{LIST}{made.id}/unreachable", reason="空号")
    assert response.status_code == 302 and response.headers["Location"].endswith(LIST)
    again = stored(db, made)
    assert again.state is CallbackState.UNREACHABLE and again.outcome == "空号"
    assert any("空号" in event.text for event in again.ticket.events if event.kind is EventKind.CALLBACK)
    assert made.id not in shown(revisit)


# the survey form

def survey_form(**fields: str) -> dict[str, str]:
    return {"satisfaction": "satisfied", "score": "", "product_working": "yes", "technician": "yes",
            "unclear": "", "suggestions": "", **fields}


def test_the_survey_form_stores_the_answers_on_the_callback_and_its_ticket(db, settings, wang, revisit):
    made = revisit_of(db, settings, repaired_ticket(db, settings))
    talking(db, made, wang)
    response = post(revisit, f"{LIST}{made.id}/survey", **survey_form(
        satisfaction="very_satisfied", score="5", product_working="yes", technician="no_visit",
        unclear="保修期多长", suggestions="希望上门时间更灵活"))
    assert response.status_code == 302
    again = stored(db, made)
    assert (again.satisfaction, again.score) == (Satisfaction.VERY_SATISFIED, 5)
    assert again.survey_answers == {"product_working": "yes", "technician": "no_visit", "unclear": "保修期多长",
                                    "suggestions": "希望上门时间更灵活"}
    assert any("非常满意" in event.text for event in again.ticket.events)
    assert db.scalar(select(Callback).where(Callback.kind == CallbackKind.SUPERVISOR)) is None
    page = revisit.get(response.headers["Location"]).get_data(as_text=True)
    assert "回答已保存" in page and "未上门" in page.split('id="survey-result"')[1]


def test_a_dissatisfied_answer_flags_the_ticket_and_schedules_the_supervisor(db, settings, wang, revisit):
    made = revisit_of(db, settings, repaired_ticket(db, settings))
    talking(db, made, wang)
    response = post(revisit, f"{LIST}{made.id}/survey", **survey_form(satisfaction="dissatisfied",
                                                                     product_working="no", suggestions="还是不转"))
    again = stored(db, made)
    assert (again.satisfaction, again.score) == (Satisfaction.DISSATISFIED, 2)
    escalated = db.scalar(select(Callback).where(Callback.kind == CallbackKind.SUPERVISOR))
    assert escalated is not None and escalated.ticket_id == made.ticket_id
    assert again.ticket.improvement_flagged_at is not None
    page = revisit.get(response.headers["Location"]).get_data(as_text=True)
    assert f"工单 {again.ticket.number} 已标记为需改进；已安排主管回访 {escalated.id}" in page


def test_bad_answers_are_refused_at_their_field_and_the_text_kept(db, settings, wang, revisit):
    made = revisit_of(db, settings, repaired_ticket(db, settings))
    talking(db, made, wang)
    url = f"{LIST}{made.id}/survey"
    response = post(revisit, url, **survey_form(satisfaction="", score="7", technician="maybe",
                                                suggestions="<希望>快一点"))
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert error_at(page, "satisfaction") == "请选择客户的回答。"
    assert error_at(page, "score") == "评分须为 1 到 5 的整数。"
    assert error_at(page, "technician")
    assert str(escape("<希望>快一点")) in page
    assert stored(db, made).satisfaction is None


def test_answers_taken_another_way_close_a_waiting_callback(db, settings, revisit):
    """The customer called in before the revisit: staff fill the form from the list, and nobody dials them."""
    made = revisit_of(db, settings, repaired_ticket(db, settings))
    page = revisit.get(f"{LIST}{made.id}").get_data(as_text=True)
    assert 'id="survey"' in page and 'id="answered-otherwise"' in page
    response = post(revisit, f"{LIST}{made.id}/survey", **survey_form(satisfaction="satisfied"))
    assert response.status_code == 302
    again = stored(db, made)
    assert again.state is CallbackState.DONE and again.outcome == "answered_otherwise"
    assert again.satisfaction is Satisfaction.SATISFIED and again.completed_at is not None
    assert made.id not in shown(revisit)


def test_the_survey_form_waits_while_the_customer_is_dialled(db, settings, revisit):
    made = revisit_of(db, settings, repaired_ticket(db, settings))
    claim(db, made.id, 1, by="test")
    db.commit()
    page = revisit.get(f"{LIST}{made.id}").get_data(as_text=True)
    assert 'id="survey"' not in page and "客户接听后方可填写" in page
    response = post(revisit, f"{LIST}{made.id}/survey", **survey_form())
    assert response.status_code == 302
    assert stored(db, made).satisfaction is None