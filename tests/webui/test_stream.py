"""The event stream: the first event at once, a rebuild on a change on the bus, nothing sent twice."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from config import Settings
from models.user import Role
from webui import stream
from webui.desk import DeskFeed
from webui.stream import event, updates
from workers import bus


@contextmanager
def publishing(settings: Settings, changes: list[dict]) -> Iterator[None]:
    """Publish ``changes`` on the bus again and again (the stream subscribes when it first waits)."""
    done = threading.Event()

    def publish() -> None:
        while not done.wait(0.05):
            bus.publish(settings, changes)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_the_first_event_carries_a_quick_reconnect(settings):
    events = updates(settings, lambda: {"parts": "一"})
    assert next(events) == 'retry: 1000\ndata: {"parts": "一"}\n\n'
    events.close()


def test_a_change_on_the_bus_that_concerns_the_page_rebuilds_it(settings):
    builds = []
    mine = {"kind": "test", "id": uuid.uuid4().hex}

    def build() -> dict:
        builds.append(1)
        return {"builds": len(builds)}

    # Polling only every minute: within this test, only the bus can bring the second build.
    events = updates(settings, build, lambda changes: mine in changes, poll_seconds=60)
    with publishing(settings, [mine]):
        assert next(events).endswith(event({"builds": 1}))
        assert next(events) == event({"builds": 2})
    events.close()


def test_an_unchanged_page_gets_keep_alives_not_the_same_event_again(settings, monkeypatch):
    monkeypatch.setattr(stream, "KEEPALIVE_SECONDS", 0)
    shown = {"waiting": 1}
    events = updates(settings, lambda: dict(shown), poll_seconds=0.05)
    assert next(events).endswith(event({"waiting": 1}))
    assert [next(events) for _ in range(3)] == [": keep-alive\n\n"] * 3
    shown["waiting"] = 2
    assert next(sent for sent in events if sent != ": keep-alive\n\n") == event({"waiting": 2})
    events.close()


def test_events_are_one_line_of_json_whatever_the_text():
    assert event({"card": "<p>第一行\n第二行</p>"}) == 'data: {"card": "<p>第一行\\n第二行</p>"}\n\n'


def test_a_desk_listens_to_its_own_agent_and_call_only(settings):
    feed = DeskFeed(settings, user_id=1)
    feed.agent_id, feed.call_uid = 7, "abc"
    assert feed.concerns([{"kind": "call", "uid": "other"}, {"kind": "agent", "id": 7}])
    assert feed.concerns([{"kind": "call", "uid": "abc"}])
    assert not feed.concerns([{"kind": "agent", "id": 8}, {"kind": "call", "uid": "other"}])
    feed.call_uid = None
    assert not feed.concerns([{"kind": "call", "uid": None}])


def test_the_stream_response_is_an_uncached_event_stream_of_the_page(login_as, open_stream):
    opened = open_stream(login_as(Role.SUPERVISOR), "/wallboard/stream")
    assert opened.status == 200
    assert opened.headers["Content-Type"].startswith("text/event-stream")
    assert opened.headers["Cache-Control"] == "no-cache"
    assert "board" in opened.wait_for(lambda payload: True)
    assert opened.chunks[0].startswith("retry: 1000\n")
