"""Call events: reported at once, written in order and exactly once, whatever the database or Redis do.

Real databases (SQLite, or PostgreSQL with HOTLINE_TEST_DATABASE=postgresql) and real Redis.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from config import Settings
from models.alarm import Alarm, AlarmKind
from models.call import (
    Call, CallDirection, CallOutcome, CallState, HangupParty, SupervisionMode, TransferKind, new_call_uid,
)
from models.calllog import agent_segments, supervisions
from models.db import session_scope
from models.recording import Recording, RecordingState
from models.ticket import EventKind, Ticket, TicketEvent
from telephony.call_events import CallEvents, journal_directory
from telephony.recorder import wav_header
from workers.connection import queue

# Nothing listens there: a PostgreSQL server, or a Redis, that does not answer.
UNREACHABLE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/test"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def events(settings: Settings) -> Iterator[CallEvents]:
    started = CallEvents(settings)
    started.start()
    yield started
    started.stop(5)


def unreachable(settings: Settings, **urls: str) -> Settings:
    """The same installation (same HOTLINE_HOME, so the same journal) with a server that does not answer."""
    broken = settings.model_copy(deep=True)
    broken.database.url = urls.get("database", settings.database_url)
    broken.redis.url = urls.get("redis", settings.redis.url)
    broken.database.retry_seconds = 0.05
    return broken


def report_call(events: CallEvents, *, caller: str = "13800138000", start: datetime = T0) -> str:
    """A whole answered call, as a flow reports it; returns its uid."""
    uid = new_call_uid()
    path = f"/rec/{uid}.wav"
    events.ringing(uid, direction=CallDirection.INBOUND, caller=caller, callee="1000", sip_call_id=f"sip-{uid}",
                   at=start)
    events.state(uid, CallState.GREETING, at=start + timedelta(seconds=2))
    events.recording_opened(uid, path, sample_rate=8000, channels=2, at=start + timedelta(seconds=2))
    events.state(uid, CallState.QUEUED, at=start + timedelta(seconds=10))
    events.recording_closed(uid, path, duration=58.0, sha256="ab" * 32, size_bytes=928044,
                            state=RecordingState.COMPLETE, error=None, at=start + timedelta(seconds=60))
    events.ended(uid, outcome=CallOutcome.ABANDONED, hangup_by=HangupParty.CUSTOMER, at=start + timedelta(seconds=60))
    return uid


def counts(settings: Settings) -> dict[str, int]:
    with session_scope(settings) as session:
        return {
            "calls": session.scalar(select(func.count(Call.id))),
            "recordings": session.scalar(select(func.count(Recording.id))),
            "tickets": session.scalar(select(func.count(Ticket.id))),
            "links": session.scalar(select(func.count(TicketEvent.id)).where(TicketEvent.kind == EventKind.CALL_LINKED)),
            "alarms": session.scalar(select(func.count(Alarm.id))),
        }


def jobs(settings: Settings) -> dict[str, list[tuple]]:
    return {name: sorted(job.args for job in queue(settings, name).jobs) for name in ("live", "transcription")}


def recording_ids(settings: Settings) -> list[tuple[int]]:
    with session_scope(settings) as session:
        return sorted((i,) for i in session.scalars(select(Recording.id)))


def assert_each_call_written_once(settings: Settings, calls: int) -> None:
    assert counts(settings) == {"calls": calls, "recordings": calls, "tickets": 1, "links": calls, "alarms": 0}
    with session_scope(settings) as session:
        assert all(c.state is CallState.ENDED for c in session.scalars(select(Call)))
        assert all(r.state is RecordingState.COMPLETE for r in session.scalars(select(Recording)))
    ids = recording_ids(settings)
    assert jobs(settings) == {"live": ids, "transcription": ids}


@contextmanager
def database_locked(settings: Settings, seconds: float) -> Iterator[threading.Thread]:
    """Another writer holds the database (SQLite ``BEGIN EXCLUSIVE``, PostgreSQL table locks) for a while."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        if settings.database_url.startswith("sqlite"):
            connection = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
            connection.execute("BEGIN EXCLUSIVE")
            holding.set()
            release.wait(seconds)
            connection.rollback()
            connection.close()
            return
        engine = create_engine(settings.database_url)
        with engine.connect() as connection:
            connection.execute(text("LOCK TABLE calls, recordings, tickets IN ACCESS EXCLUSIVE MODE"))
            holding.set()
            release.wait(seconds)
            connection.rollback()
        engine.dispose()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    try:
        yield holder
    finally:
        holder.join()


def test_a_call_is_written_in_order_with_the_times_it_was_reported(events, settings):
    uid = report_call(events)
    assert events.flush(30)
    with session_scope(settings) as session:
        call = session.scalar(select(Call).where(Call.uid == uid))
        assert (call.ring_at, call.answered_at, call.queued_at, call.ended_at) == (
            T0, T0 + timedelta(seconds=2), T0 + timedelta(seconds=10), T0 + timedelta(seconds=60))
        assert (call.state, call.outcome, call.caller_id) == (CallState.ENDED, CallOutcome.ABANDONED, "+8613800138000")
        recording = call.recording
        assert (recording.state, recording.started_at, recording.closed_at) == (
            RecordingState.COMPLETE, T0 + timedelta(seconds=2), T0 + timedelta(seconds=60))
        [link] = [e for e in call.ticket.events if e.kind is EventKind.CALL_LINKED]
        assert link.at == T0 + timedelta(seconds=10)  # when it was queued: the agent's screen pops it
    assert_each_call_written_once(settings, 1)


def test_a_locked_database_holds_back_no_report_and_loses_none(events, settings):
    with database_locked(settings, seconds=2) as holder:
        for _ in range(3):
            report_call(events)
        assert holder.is_alive()  # every report was taken while the database was still locked
    assert events.flush(30)
    assert_each_call_written_once(settings, 3)


def test_an_unreachable_database_is_logged_once_and_its_reports_replayed_exactly_once(settings, caplog):
    caplog.set_level(logging.INFO, logger="telephony.journal")
    down = CallEvents(unreachable(settings, database=UNREACHABLE_DATABASE))
    report_call(down)
    report_call(down)
    down.start()
    assert not down.flush(0.5)
    assert not down.stop(1)
    outages = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outages) == 1 and outages[0].startswith("database unavailable")
    assert "12 call events kept in the journal; retrying every 0.05 s" in outages[0]

    back = CallEvents(settings)  # the next `hotline sip`, with the database answering
    back.start()
    assert back.flush(30)
    back.stop()
    assert_each_call_written_once(settings, 2)


def test_reports_applied_twice_write_nothing_twice(settings, tmp_path):
    """A crash between a commit and the journal's pointer: the same reports are applied again."""
    down = CallEvents(unreachable(settings, database=UNREACHABLE_DATABASE))
    uid = report_call(down)
    report_call(down)
    down.alarm(uid, AlarmKind.RECORDING_FAILED, "disk full", at=T0 + timedelta(seconds=30))
    down.stop(1)
    replay_twice(settings, tmp_path)
    assert counts(settings) == {"calls": 2, "recordings": 2, "tickets": 1, "links": 2, "alarms": 1}


def test_a_torn_last_report_is_ignored_and_the_rest_written(settings, caplog):
    down = CallEvents(unreachable(settings, database=UNREACHABLE_DATABASE))
    report_call(down)
    down.stop(1)
    with open(journal_directory(settings) / "calls.jsonl", "ab") as journal:
        journal.write(b'{"seq":7,"entry":{"event":"ringing","uid":"')  # killed mid-write
    replaying = CallEvents(settings)
    replaying.start()
    assert replaying.flush(30)
    replaying.stop()
    assert "torn last line" in caplog.text
    assert_each_call_written_once(settings, 1)


def test_jobs_wait_for_redis_without_holding_back_the_rows(settings, caplog):
    no_redis = CallEvents(unreachable(settings, redis=UNREACHABLE_REDIS))
    no_redis.start()
    report_call(no_redis)
    assert not no_redis.flush(1)
    assert counts(settings)["calls"] == 1  # the rows are written all the same
    assert not no_redis.stop(1)
    assert "redis unavailable" in caplog.text

    back = CallEvents(settings)
    back.start()
    assert back.flush(30)
    back.stop()
    assert_each_call_written_once(settings, 1)


def test_restart_repairs_the_recordings_a_killed_process_left_open(settings):
    killed = CallEvents(unreachable(settings, database=UNREACHABLE_DATABASE))
    uid, lost = new_call_uid(), new_call_uid()
    path = settings.recordings_dir / f"{uid}.wav"
    path.parent.mkdir(parents=True)
    path.write_bytes(wav_header(0, 8000) + b"\x01\x00\x02\x00" * 8000)  # one second; the header says none
    for call_uid, recording in ((uid, path), (lost, settings.recordings_dir / "gone.wav")):
        killed.ringing(call_uid, direction=CallDirection.INBOUND, caller="13800138000", callee="1000",
                       sip_call_id=call_uid)
        killed.state(call_uid, CallState.GREETING)
        killed.recording_opened(call_uid, str(recording), sample_rate=8000, channels=2)
    unrecorded = new_call_uid()  # its WAV could not be created: queued with no recording open
    killed.ringing(unrecorded, direction=CallDirection.INBOUND, caller="13800138001", callee="1000",
                   sip_call_id=unrecorded)
    killed.state(unrecorded, CallState.QUEUED)
    killed.stop(1)  # the process died mid-call: no closing, no end

    restarted = CallEvents(settings)
    restarted.start()
    restarted.repair_unfinished()
    assert restarted.flush(30)
    restarted.stop()
    with session_scope(settings) as session:
        repaired = session.scalar(select(Recording).join(Call).where(Call.uid == uid))
        assert (repaired.state, repaired.duration, repaired.size_bytes) == (RecordingState.REPAIRED, 1.0, 32044)
        failed = session.scalar(select(Recording).join(Call).where(Call.uid == lost))
        assert failed.state is RecordingState.FAILED and failed.error.startswith("repair failed")
        assert [(c.state, c.outcome, c.hangup_by, c.ticket_id is not None) for c in session.scalars(select(Call))] == [
            (CallState.ENDED, CallOutcome.FAILED, HangupParty.SYSTEM, True)] * 3  # none stays stuck in a queue
        [alarm] = session.scalars(select(Alarm)).all()
        assert alarm.call_id == failed.call_id and "gone.wav lost" in alarm.message
        repaired_id, live = repaired.id, sorted((r.id,) for r in session.scalars(select(Recording)))
    assert jobs(settings) == {"live": live, "transcription": [(repaired_id,)]}


def test_a_report_that_can_never_apply_is_set_aside_and_holds_back_nothing(events, settings, caplog):
    events.state(new_call_uid(), CallState.QUEUED)  # a call that was never reported ringing
    report_call(events)
    assert events.flush(30)
    assert "cannot be applied; set aside" in caplog.text
    assert (journal_directory(settings) / "calls.rejected.jsonl").read_text().count("never applied") == 1
    assert_each_call_written_once(settings, 1)


def test_a_report_the_disk_refuses_is_logged_and_the_call_goes_on(settings, hotline_env):
    # A real failed write: the journal may not grow (as on a full disk).
    reporter = subprocess.run(
        [sys.executable, "-c", (
            "import resource, signal; from config import load_settings\n"
            "from models.call import CallDirection; from telephony.call_events import CallEvents\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "events = CallEvents(load_settings())\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))\n"
            "events.ringing('a' * 32, direction=CallDirection.INBOUND, caller='13800138000', callee='1000',"
            " sip_call_id='x')\n"
            "print('the call goes on')\n"
        )],
        cwd=ROOT, env={**os.environ, **hotline_env}, capture_output=True, text=True, check=True,
    )
    assert reporter.stdout == "the call goes on\n"
    assert "cannot journal a call event" in reporter.stderr and '"caller": "13800138000"' in reporter.stderr


def test_bad_input_is_refused_when_reported(events):
    with pytest.raises(ValueError, match="naive datetime"):
        events.state("a" * 32, CallState.QUEUED, at=datetime(2026, 11, 23, 9, 0))
    with pytest.raises(ValueError, match="'lost'"):
        events.ended("a" * 32, outcome="lost", hangup_by=HangupParty.CUSTOMER)  # type: ignore[arg-type]
    assert events.flush(1)


def test_the_agent_who_takes_a_call_is_written_with_it(events, settings, db):
    from models.accounts import add_user
    from models.user import Role

    agent = add_user(db, "zhang", Role.AGENT, "agent-pass-1", realm="hotline", extension="1001")
    db.commit()
    uid = new_call_uid()
    events.ringing(uid, direction=CallDirection.OUTBOUND, caller="13800138000", callee="1000", sip_call_id=uid)
    events.state(uid, CallState.BRIDGED, agent_id=agent.id)
    assert events.flush(30)
    with session_scope(settings) as session:
        call = session.scalar(select(Call).where(Call.uid == uid))
        assert (call.state, call.agent_id, call.caller_id, call.callee) == (
            CallState.BRIDGED, agent.id, "+8613800138000", "1000")


def test_a_caller_an_agent_takes_gives_up_the_place_they_kept_before(events, settings, db):
    from models.accounts import add_user
    from models.callback import Callback, CallbackState
    from models.callbacks import SERVED_LIVE, keep_place
    from models.user import Role

    agent = add_user(db, "zhang", Role.AGENT, "agent-pass-1", realm="hotline", extension="1001")
    kept = keep_place(db, settings, phone="13800138000", queue_id=None, queued_at=T0)
    db.commit()
    uid = report_call_start(events)  # the same caller, a while later: this time they wait and are served
    events.state(uid, CallState.BRIDGED, T0 + timedelta(seconds=20), agent_id=agent.id)
    assert events.flush(30)
    db.expire_all()
    callback = db.get(Callback, kept.id)
    assert callback.state is CallbackState.CANCELLED and callback.outcome == SERVED_LIVE


def report_transferred_and_supervised_call(events: CallEvents, zhang: int, li: int) -> str:
    """zhang takes the call, a supervisor listens then barges in and leaves; zhang passes the caller to li."""
    uid = report_call_start(events)
    at = lambda seconds: T0 + timedelta(seconds=seconds)  # noqa: E731
    events.state(uid, CallState.BRIDGED, at(20), agent_id=zhang)
    events.supervised(uid, "1009", SupervisionMode.LISTEN, at(25))
    events.supervised(uid, "1009", SupervisionMode.BARGE, at(30))
    events.supervised(uid, "1009", None, at(35))
    events.state(uid, CallState.ON_HOLD, at(40))
    events.transferred(uid, TransferKind.BLIND, "zhang", "li", agent_id=li, at=at(45))
    events.state(uid, CallState.BRIDGED, at(45.1), agent_id=li)
    events.ended(uid, outcome=CallOutcome.COMPLETED, hangup_by=HangupParty.CUSTOMER, at=at(90))
    return uid


def report_call_start(events: CallEvents) -> str:
    uid = new_call_uid()
    events.ringing(uid, direction=CallDirection.INBOUND, caller="13800138000", callee="1000", sip_call_id=uid, at=T0)
    events.state(uid, CallState.GREETING, at=T0 + timedelta(seconds=2))
    events.state(uid, CallState.QUEUED, at=T0 + timedelta(seconds=10))
    return uid


def test_transfer_and_supervision_reports_applied_twice_land_once(settings, db, tmp_path):
    from models.accounts import add_user
    from models.user import Role

    zhang = add_user(db, "zhang", Role.AGENT, "agent-pass-1", realm="hotline", extension="1001")
    li = add_user(db, "li", Role.AGENT, "agent-pass-2", realm="hotline", extension="1002")
    add_user(db, "boss", Role.SUPERVISOR, "boss-pass-1", realm="hotline", extension="1009")
    db.commit()
    down = CallEvents(unreachable(settings, database=UNREACHABLE_DATABASE))
    uid = report_transferred_and_supervised_call(down, zhang.id, li.id)
    down.stop(1)
    replay_twice(settings, tmp_path)
    at = lambda seconds: T0 + timedelta(seconds=seconds)  # noqa: E731
    with session_scope(settings) as session:
        call = session.scalar(select(Call).where(Call.uid == uid))
        assert agent_segments(call) == [{"agent": "zhang", "from": at(20), "to": at(45)},
                                        {"agent": "li", "from": at(45), "to": at(90)}]
        assert supervisions(call) == [
            {"supervisor": "boss", "mode": "listen", "at": at(25), "until": at(30)},
            {"supervisor": "boss", "mode": "barge", "at": at(30), "until": at(35)},
        ]
        assert [(h.user.username, h.since) for h in call.ticket.handlers] == [("zhang", at(20)), ("li", at(45))]
        assert call.ticket.owner.username == "zhang" and len(call.transfers) == 1
        assert len([e for e in call.ticket.events if e.kind is EventKind.TRANSFERRED]) == 1


def replay_twice(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Apply the journal, then the same journal again, as after a crash between a commit and the pointer."""
    before_replay = tmp_path / "journal-before-replay"
    shutil.copytree(journal_directory(settings), before_replay)
    for _ in range(2):
        replaying = CallEvents(settings)
        replaying.start()
        assert replaying.flush(30)
        replaying.stop()
        shutil.rmtree(journal_directory(settings))
        shutil.copytree(before_replay, journal_directory(settings))
