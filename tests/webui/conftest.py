"""flaskr-style fixtures: the app on a fresh database, clients logged in by role, a caller in a queue, event streams."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from queue import Empty, SimpleQueue
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from config import Settings
from models.accounts import add_user
from models.call import Call, CallState
from models.calllog import log_inbound, mark_answered, mark_state, ticket_for_call
from models.customer import Customer, CustomerProduct
from models.directory import add_customer
from models.queue import Queue
from models.queues import add_queue
from models.user import Role
from webui import create_app, stream
from workers import bus

PASSWORD = "agent-pass-1"
# Generous: an event is due within a second; this only keeps a broken stream from hanging the test.
EVENT_TIMEOUT = 15.0


@pytest.fixture
def bus_on(settings: Settings) -> None:
    """This process publishes its committed agent and call changes on the test's Redis, as every Hotline process does."""
    bus.install(settings)


@pytest.fixture
def app(settings, db, bus_on) -> Flask:
    add_user(db, "zhang", Role.AGENT, PASSWORD, realm=settings.sip.realm, display_name="张三", extension="1001")
    db.commit()
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def csrf_token(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def log_in(client: FlaskClient, username: str) -> FlaskClient:
    page = client.get("/auth/login").get_data(as_text=True)
    response = client.post("/auth/login", data={"username": username, "password": PASSWORD,
                                                "csrf_token": csrf_token(page)})
    assert response.status_code == 302
    return client


@pytest.fixture
def logged_in(client: FlaskClient) -> FlaskClient:
    """The agent zhang (extension 1001), logged in."""
    return log_in(client, "zhang")


@pytest.fixture
def login_as(app: Flask, db: Session, settings: Settings) -> Callable[[Role], FlaskClient]:
    """A new user of the role, logged in on a client of their own."""
    def login(role: Role) -> FlaskClient:
        name = f"{role.value}-user"
        add_user(db, name, role, PASSWORD, realm=settings.sip.realm, display_name=f"{role.value} 用户")
        db.commit()
        return log_in(app.test_client(), name)

    return login


@pytest.fixture
def hotline_queue(db: Session) -> Queue:
    made = add_queue(db, "呼叫中心", numbers=["1000"])
    db.commit()
    return made


def queue_caller(db: Session, settings: Settings, queue: Queue, caller: str = "13800138000",
                 *, ticket: bool = True) -> Call:
    """An answered inbound call waiting in ``queue``, with its ticket (as telephony leaves it); committed."""
    call = log_inbound(db, settings, caller=caller, callee="1000", sip_call_id=f"sip-{caller}-{time.monotonic()}")
    mark_answered(db, call)
    call.queue = queue
    mark_state(db, call, CallState.QUEUED)
    if ticket:
        ticket_for_call(db, settings, call)
    db.commit()
    return call


@pytest.fixture
def known_customer(db: Session, settings: Settings) -> Customer:
    """李四, who bought an air conditioner, calling from 13800138000."""
    customer = add_customer(db, "李四", ["13800138000"], settings.general.phone_region)
    customer.products.append(CustomerProduct(model="KFR-35GW", order_number="SO-1001", serial_number="SN77",
                                             purchase_date=date(2025, 6, 1)))
    db.commit()
    return customer


class EventStream:
    """A server-sent event stream read on a thread of its own, so a test waits for an event with a timeout."""

    def __init__(self, client: FlaskClient, url: str) -> None:
        self.events: SimpleQueue[dict[str, Any]] = SimpleQueue()
        self.chunks: list[str] = []
        self.status = 0
        self.headers: dict[str, str] = {}
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(client, url), daemon=True)
        self._thread.start()
        self._started.wait(EVENT_TIMEOUT)
        assert self.headers, f"{url} did not answer"

    def _read(self, client: FlaskClient, url: str) -> None:
        # The request and its iteration stay on this thread: the stream runs inside the request's context.
        try:
            response = client.get(url, buffered=False)
            self.status, self.headers = response.status_code, dict(response.headers)
        finally:
            self._started.set()
        try:
            for chunk in response.response:
                text = chunk.decode() if isinstance(chunk, bytes) else chunk
                self.chunks.append(text)
                for line in text.splitlines():
                    if line.startswith("data: "):
                        self.events.put(json.loads(line[len("data: "):]))
                if self._stop.is_set():
                    break
        finally:
            response.close()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = EVENT_TIMEOUT) -> dict[str, Any]:
        """The first event from now on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = None
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen = self.events.get(timeout=left)
            except Empty:
                break
            if predicate(seen):
                return seen
        raise AssertionError(f"no such event within {timeout} s; the last one: {seen}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(EVENT_TIMEOUT)


@pytest.fixture
def open_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[FlaskClient, str], EventStream]]:
    """Open event streams, closed at the end: frequent keep-alives let their readers notice at once."""
    monkeypatch.setattr(stream, "KEEPALIVE_SECONDS", 0.5)
    streams: list[EventStream] = []

    def open_(client: FlaskClient, url: str) -> EventStream:
        streams.append(EventStream(client, url))
        return streams[-1]

    yield open_
    for opened in streams:
        opened.close()
