"""A person's view: real Chromium on `hotline web` — the calls page in Chinese, the desk popping the caller's card, the wallboard live."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import time as clock
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from models.accounts import add_user
from models.agents import agent_named, answer, make_available, offer
from models.callback import Callback, CallbackKind, CallbackMode, Satisfaction
from models.callbacks import answered, dialled, schedule, start_attempt
from models.calllog import log_inbound, mark_bridged, open_recording
from models.ticket import EventKind, Priority, TicketType, Urgency
from models.ticketing import create_ticket
from models.transcript import Channel, Transcript, TranscriptSegment, TranscriptState
from models.user import Role
from tests.webui.conftest import PASSWORD, queue_caller
from workers import connection

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Generous: the card is due within a second of the ring; this only bounds a broken page.
POP_TIMEOUT_MS = 5000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebServer:
    """`hotline web` on a port of its own, on the test's database and Redis; restartable on that port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(["hotline", "web", "--port", str(self.port)], env=os.environ.copy())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"hotline web did not answer on port {self.port} (exit code {self.process.poll()})")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def server(app, settings) -> Iterator[WebServer]:
    running = WebServer()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def web_server(server: WebServer) -> str:
    return server.url


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        opened = browser.new_page(locale="zh-CN")
        opened.set_default_timeout(15_000)
        try:
            yield opened
        finally:
            opened.screenshot(path=str(tmp_path / "last.png"), full_page=True)
            browser.close()


def log_in(page: Page, server: str, username: str, then: str = "/") -> None:
    page.goto(f"{server}{then}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}{then}")


@pytest.mark.browser
def test_agent_logs_in_and_sees_a_ringing_call(web_server, db, settings, page):
    log_inbound(db, settings, caller="13800138000", callee="1000", sip_call_id="x")
    db.commit()
    page.goto(f"{web_server}/")
    page.fill("input[name=username]", "zhang")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("text=实时通话 (1)")
    assert "+8613800138000" in page.content()


@pytest.mark.browser
def test_the_desk_pops_the_card_as_the_phone_rings_and_saves_the_agents_edits(web_server, db, settings, page,
                                                                               hotline_queue, known_customer):
    log_in(page, web_server, "zhang", then="/desk/")
    page.click("[data-action=ready]")
    page.wait_for_selector('#desk-state [data-agent-state="available"]')
    page.wait_for_selector("body[data-live=connected]")
    page.evaluate("window.sameDocument = true")

    call = queue_caller(db, settings, hotline_queue)
    agent = agent_named(db, "zhang")
    rang = time.monotonic()
    assert offer(db, agent, call.uid)
    db.commit()
    page.wait_for_selector(f'#desk-card [data-call="{call.uid}"] .caller-number:text-is("+8613800138000")',
                           timeout=POP_TIMEOUT_MS)
    print(f"\ncaller card shown {time.monotonic() - rang:.3f} s after the agent's row went to ringing")
    card = page.locator("#desk-card")
    expect(card).to_contain_text("李四")
    expect(card).to_contain_text("KFR-35GW")
    expect(card).to_contain_text(call.ticket.number)

    # The agent starts typing while it rings; the call is answered meanwhile and the edits stay.
    page.select_option("#type", "repair")
    page.select_option("#urgency", "urgent")
    page.select_option("#priority", "P2")
    page.fill("#description", "空调不制冷，约周六上门维修")
    assert answer(db, agent, call.uid)
    mark_bridged(db, call, agent.user)
    transcript = Transcript(recording=open_recording(db, settings, call, "/tmp/desk-live.wav"), live=True,
                            state=TranscriptState.RUNNING)
    db.add(transcript)
    db.commit()
    page.wait_for_selector('#desk-state [data-agent-state="on_call"]')
    db.add(TranscriptSegment(transcript=transcript, channel=Channel.CUSTOMER, start=2.0, end=4.0, text="空调不制冷"))
    db.commit()
    expect(page.locator("#desk-transcript")).to_contain_text("客户: 空调不制冷")
    expect(page.locator("#description")).to_have_value("空调不制冷，约周六上门维修")
    assert page.evaluate("window.sameDocument") is True

    page.click("[data-action=save-ticket]")
    page.wait_for_selector(f"text=工单 {call.ticket.number} 已保存")
    db.expire_all()
    ticket = call.ticket
    assert (ticket.type, ticket.urgency, ticket.priority) == (TicketType.REPAIR, Urgency.URGENT, Priority.P2)
    changed = {event.field: event.actor.username for event in ticket.events if event.kind is EventKind.CHANGED}
    assert {field: changed.get(field) for field in ("type", "urgency", "priority", "description")} == {
        "type": "zhang", "urgency": "zhang", "priority": "zhang", "description": "zhang"}


@pytest.mark.browser
def test_the_wallboard_shows_new_callers_and_agent_changes_without_a_reload(server, db, settings, page,
                                                                           hotline_queue):
    add_user(db, "li", Role.SUPERVISOR, PASSWORD, realm=settings.sip.realm, display_name="李主管")
    agent_named(db, "zhang")
    db.commit()
    log_in(page, server.url, "li", then="/wallboard/")
    queue = page.locator('[data-queue="呼叫中心"]')
    expect(queue.locator('[data-figure="waiting"]')).to_have_text("0")
    page.evaluate("window.sameDocument = true")

    queue_caller(db, settings, hotline_queue, "13900139000")
    expect(queue.locator("tr.waiting")).to_contain_text("+8613900139000")
    expect(queue.locator('[data-figure="waiting"]')).to_have_text("1")

    make_available(db, agent_named(db, "zhang"), source="test")
    db.commit()
    expect(queue.locator('[data-state="available"]')).to_have_text("1")
    expect(page.locator('#totals [data-state="logged_out"]')).to_have_text("0")

    # A restarted `hotline web` serves the open board again, rebuilt from the database.
    server.restart()
    queue_caller(db, settings, hotline_queue, "13700137000")
    expect(queue.locator("tr.waiting")).to_have_count(2)
    expect(queue.locator("tr.waiting").nth(1)).to_contain_text("+8613700137000")
    assert page.evaluate("window.sameDocument") is True


@pytest.mark.browser
def test_revisit_staff_work_a_callback_from_the_list_and_submit_the_survey_form(app, db, settings, page):
    # Calls allowed at any hour, here and in `hotline web` (it reads the config file as it starts).
    settings.callbacks.calling_hours_start, settings.callbacks.calling_hours_end = clock(0, 0), clock(23, 59, 59)
    settings.config_path.write_text("[callbacks]\ncalling_hours_start = 00:00:00\ncalling_hours_end = 23:59:59\n")
    wang = add_user(db, "wang", Role.REVISIT, PASSWORD, realm=settings.sip.realm, display_name="王回访",
                    extension="1101")
    ticket = create_ticket(db, settings, ticket_type=TicketType.REPAIR, description="洗衣机不转", phone="+8613800138000")
    callback = schedule(db, settings, kind=CallbackKind.SATISFACTION, phone=ticket.phone, ticket=ticket,
                        mode=CallbackMode.STAFF)
    db.commit()
    server = WebServer()
    server.start()
    try:
        log_in(page, server.url, "wang")
        page.click("nav >> text=回访")
        row = page.locator(f'#open-callbacks tr[data-callback="{callback.id}"]')
        expect(row).to_contain_text(ticket.number)
        row.locator("[data-action=open-callback]").click()
        expect(page.locator("h1")).to_contain_text(f"回访 {callback.id}")
        expect(page.locator("#ticket-summary")).to_contain_text("洗衣机不转")

        # Call now: the dialler's job is queued with the staff member, whose softphone rings first.
        page.click("[data-action=call-now]")
        expect(page.locator(".flash")).to_contain_text("1101")
        jobs = connection.queue(settings, connection.DIALLER_QUEUE).jobs
        assert [job.args for job in jobs] == [(callback.id, 1, wang.id)]
        # As `hotline sip` would: the staff member answers, then the customer does.
        start = start_attempt(db, settings, callback.id, 1, by="test", staff_id=wang.id)
        assert start.attempt is not None, start.why
        dialled(db, start.attempt, "browser-callback", staff_id=wang.id)
        answered(db, start.attempt)
        db.commit()

        page.reload()
        page.check("input[name=satisfaction][value=very_satisfied]")
        page.check("input[name=product_working][value=yes]")
        page.check("input[name=technician][value=yes]")
        page.fill("#suggestions", "师傅很专业")
        page.click("[data-action=save-survey]")
        expect(page.locator(".flash")).to_contain_text(f"回访 {callback.id} 的回答已保存")
        expect(page.locator("#survey-result")).to_contain_text("非常满意 (5/5)")
        expect(page.locator("#survey-result")).to_contain_text("师傅很专业")
    finally:
        server.stop()
    db.expire_all()
    stored = db.get(Callback, callback.id)
    assert (stored.satisfaction, stored.score) == (Satisfaction.VERY_SATISFIED, 5)
    assert stored.survey_answers == {"product_working": "yes", "technician": "yes", "unclear": None,
                                     "suggestions": "师傅很专业"}
