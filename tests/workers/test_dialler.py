"""The dialler's RQ side: jobs run in-process exactly once per attempt, the reconciler puts back what Redis lost."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from config import Settings
from models.base import utcnow
from models.callback import AttemptOutcome, Callback, CallbackAttempt, CallbackKind, CallbackMode, CallbackState
from models.callbacks import finish_attempt, schedule, start_attempt
from models.db import session_scope
from tests.telephony import peers
from workers import dispatch
from workers.connection import DIALLER_QUEUE, queue, redis_connection, redis_url
from workers.dialler import DiallerService, dial_callback, instance_name, job_status, reconcile

PHONE = "+8613800138000"


def schedule_many(settings: Settings, count: int, *, mode: CallbackMode = CallbackMode.AUTO) -> list[int]:
    with session_scope(settings) as session:
        # A fixed moment inside calling hours, so the test does not depend on the time it runs.
        return [schedule(session, settings, kind=CallbackKind.CUSTOMER_REQUESTED, phone=f"+86138001{i:05d}",
                         mode=mode).id for i in range(count)]


class Counting:
    """A stand-in for the telephony's take: the rules' claim, then nothing dialled; counts what it claimed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.claimed: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def __call__(self, callback_id: int, number: int, staff_id: int | None = None) -> str:
        with session_scope(self.settings) as session:
            start = start_attempt(session, self.settings, callback_id, number, by="test", staff_id=staff_id,
                                  now=utcnow())
            if start.attempt is not None:
                with self.lock:
                    self.claimed.append((callback_id, number))
                finish_attempt(session, self.settings, start.attempt, AttemptOutcome.COMPLETED)
        return start.why


def open_all_day(settings: Settings) -> None:
    from datetime import time

    settings.callbacks.calling_hours_start = time(0, 0)
    settings.callbacks.calling_hours_end = time(23, 59, 59)


def test_a_callback_job_names_its_attempt_and_goes_to_the_dialler_queue(settings: Settings) -> None:
    job = dispatch.enqueue_callback(settings, 7, 2)
    assert job.id == "callback-7-2" and job.origin == DIALLER_QUEUE
    assert job.func_name == "workers.dialler.dial_callback" and job.args == (7, 2, None)
    later = dispatch.enqueue_callback(settings, 7, 3, utcnow() + timedelta(minutes=5))
    assert later.get_status() == "scheduled"


def test_a_process_without_sip_refuses_to_dial() -> None:
    import workers.dialler

    workers.dialler._take = None
    try:
        dial_callback(1, 1)
    except RuntimeError as exc:
        assert "hotline sip" in str(exc)
    else:
        raise AssertionError("dialled without an endpoint")


def test_jobs_run_twice_and_two_processes_claim_each_attempt_once(settings: Settings) -> None:
    open_all_day(settings)
    ids = schedule_many(settings, 30)
    for callback_id in ids:  # every job twice, as RQ may run it
        dispatch.enqueue_callback(settings, callback_id, 1)
        dispatch.enqueue_callback(settings, callback_id, 1)
    take = Counting(settings)
    services = [DiallerService(settings, take), DiallerService(settings, take)]
    for service in services:
        service.start()
    try:
        assert peers.wait_for(lambda: len(take.claimed) >= len(ids) and not queue(settings, DIALLER_QUEUE).count, 30)
    finally:
        for service in services:
            service.stop()
    # A reconciler may be waiting out SQLite's lock (30 s) when asked to stop; then it ends too.
    assert peers.wait_for(lambda: not any(thread.is_alive() for service in services for thread in service._threads),
                          40), "stop ends the threads"
    assert sorted(take.claimed) == sorted((i, 1) for i in ids)
    with session_scope(settings) as session:
        assert {c.state for c in session.scalars(select(Callback))} == {CallbackState.DONE}


def test_after_redis_is_flushed_the_reconciler_enqueues_each_due_callback_once(settings: Settings) -> None:
    open_all_day(settings)
    ids = schedule_many(settings, 1000)
    first = reconcile(settings)
    assert first.enqueued == 1000
    assert reconcile(settings).enqueued == 0  # live jobs are left alone
    redis_connection(settings).flushall()
    assert reconcile(settings).enqueued == 1000
    take = Counting(settings)
    service = DiallerService(settings, take)
    service.start()
    try:
        assert peers.wait_for(lambda: len(take.claimed) == len(ids), 120)
    finally:
        service.stop()
    assert sorted(take.claimed) == sorted((i, 1) for i in ids)


def test_staff_callbacks_wait_for_a_person_and_future_ones_for_their_time(settings: Settings) -> None:
    open_all_day(settings)
    [staff] = schedule_many(settings, 1, mode=CallbackMode.STAFF)
    assert reconcile(settings).enqueued == 0
    with session_scope(settings) as session:
        later = schedule(session, settings, kind=CallbackKind.CUSTOMER_REQUESTED, phone=PHONE,
                         mode=CallbackMode.AUTO, earliest=utcnow() + timedelta(minutes=30)).id
        assert start_attempt(session, settings, staff, 1, by="t").why.startswith("a staff callback")
    assert reconcile(settings).enqueued == 1
    assert job_status(settings, dispatch.callback_job_id(later, 1)) == "scheduled"
    with session_scope(settings) as session:
        assert start_attempt(session, settings, later, 1, by="t").why == "not due yet"


def test_an_attempt_whose_process_died_is_ended_and_retried(settings: Settings) -> None:
    open_all_day(settings)
    [callback_id] = schedule_many(settings, 1)
    with session_scope(settings) as session:
        attempt = start_attempt(session, settings, callback_id, 1, by="dead:1").attempt
        assert attempt is not None
        attempt.claimed_at = utcnow() - timedelta(hours=1)
    done = reconcile(settings)
    assert done.abandoned == 1
    with session_scope(settings) as session:
        callback = session.get_one(Callback, callback_id)
        assert callback.state is CallbackState.SCHEDULED and callback.outcome == "abandoned"


def test_a_job_left_scheduled_after_its_time_is_moved_by_the_reconciler(settings: Settings) -> None:
    """No RQ scheduler (killed, or a standalone hotline sip): the reconciler puts the due job on the queue."""
    open_all_day(settings)
    [callback_id] = schedule_many(settings, 1)
    dispatch.enqueue_callback(settings, callback_id, 1, utcnow() + timedelta(seconds=1))
    assert reconcile(settings).enqueued == 0
    assert reconcile(settings, now=utcnow() + timedelta(seconds=10)).enqueued == 1
    assert job_status(settings, dispatch.callback_job_id(callback_id, 1)) == "queued"


def serve_in_a_process(env: dict[str, str], seconds: float) -> None:
    """Another ``hotline sip``'s dialler: its own process, the same database and Redis."""
    import os
    import time

    from config import load_settings

    os.environ.update(env)
    settings = load_settings()
    open_all_day(settings)

    def take(callback_id: int, number: int, staff_id: int | None = None) -> str:
        with session_scope(settings) as session:
            start = start_attempt(session, settings, callback_id, number, by=instance_name(), staff_id=staff_id)
            if start.attempt is not None:
                finish_attempt(session, settings, start.attempt, AttemptOutcome.COMPLETED)
        return start.why

    service = DiallerService(settings, take)
    service.start()
    time.sleep(seconds)
    service.stop()


def test_two_processes_share_the_dialler_queue_and_never_dial_twice(settings: Settings) -> None:
    import multiprocessing
    import os

    open_all_day(settings)
    ids = schedule_many(settings, 300)
    for callback_id in ids:
        dispatch.enqueue_callback(settings, callback_id, 1)
        dispatch.enqueue_callback(settings, callback_id, 1)  # run twice, as RQ may
    env = {key: os.environ[key] for key in ("HOTLINE_HOME", "HOTLINE_CONFIG") if key in os.environ}
    env["REDIS_URL"] = redis_url(settings)
    if settings.database.url:
        env["HOTLINE_DATABASE_URL"] = settings.database.url
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=serve_in_a_process, args=(env, 25)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    with session_scope(settings) as session:
        attempts = session.scalars(select(CallbackAttempt)).all()
        assert sorted(a.callback_id for a in attempts) == sorted(ids), "each callback claimed exactly once"
        assert len({a.claimed_by for a in attempts}) == 2, "both processes took jobs"
        assert {c.state for c in session.scalars(select(Callback))} == {CallbackState.DONE}
