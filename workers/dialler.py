"""The dialler's side of RQ: the job, the worker that runs it inside ``hotline sip``, and the reconciler.

The database is the truth, RQ carries the work. Each attempt of a callback is one RQ job
(``callback-<id>-<attempt>``), enqueued for its time with RQ's scheduler (``enqueue_at``). The job
runs in the process that owns the SIP endpoint: ``hotline sip`` serves the dialler queue with a
``DiallerWorker`` on a thread of its own and hands each job to the telephony's ``take`` function,
which claims the attempt in the database (one conditional UPDATE) before dialling — so a job run
twice, two schedulers or two ``hotline sip`` never dial twice.

Redis forgets (flushed, restarted, a scheduler dead: RQ's standby scheduler can leave due jobs
minutes late, rq/rq #1758), so every ``callbacks.reconcile_seconds`` the reconciler puts back
whatever the database says is due soon and has no live job, and ends attempts a killed process
left open.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.exceptions import RedisError
from rq.job import Job, JobStatus
from rq.timeouts import TimerDeathPenalty
from rq.worker import SimpleWorker
from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from models.base import utcnow
from models.callback import AttemptOutcome
from models.callbacks import automatic_due, finish_attempt, mark_due, stale_attempts
from models.db import session_scope
from workers.connection import DIALLER_QUEUE, queue, redis_connection
from workers.dispatch import callback_job_id, enqueue_callback

log = logging.getLogger(__name__)

Take = Callable[[int, int, "int | None"], str]
# A job still to run, or running: the reconciler leaves it alone.
LIVE_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.DEFERRED}
# RQ's scheduler moves a job within a second of its time; one still scheduled this late is moved by us.
LATE_TOLERANCE = timedelta(seconds=5)
STATUS_BATCH = 1000
# The worker ends after this long without a job, so a stop is noticed (and it starts again).
IDLE_SECONDS = 2
# The worker's heartbeat; it also bounds how long one wait for a job blocks (RQ: ttl - 15 s).
WORKER_TTL = 16

_take: Take | None = None


def instance_name() -> str:
    """Which process claimed an attempt (host:pid), for the attempt's row and the logs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dial_callback(callback_id: int, attempt: int, staff_id: int | None = None) -> str:
    """The RQ job: hand the attempt to this process's dialler; what it did is the job's result."""
    if _take is None:
        raise RuntimeError("callbacks are dialled by `hotline sip` only: this process has no SIP endpoint")
    return _take(callback_id, attempt, staff_id)


class DiallerWorker(SimpleWorker):
    """RQ's in-process worker, fit for a thread of ``hotline sip``: no signal handlers, timeouts by timer."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        """Signals belong to ``hotline sip``'s main thread, which stops this worker itself."""

    def subscribe(self) -> None:
        """No pub/sub commands (RQ's shutdown, kill-horse): ``hotline sip`` stops this worker itself.

        RQ's listener thread waits up to 60 s for a message, and the worker's teardown waits for it:
        on a busy machine every stop of ``hotline sip`` took the dialler's full 5 s."""

    def unsubscribe(self) -> None:
        """Nothing subscribed (see ``subscribe``)."""


@dataclass
class Reconciled:
    enqueued: int = 0
    abandoned: int = 0


class DiallerService:
    """In ``hotline sip``: serve the dialler queue and reconcile, each on a thread, until ``stop``."""

    def __init__(self, settings: Settings, take: Take) -> None:
        self.settings = settings
        self.take = take
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        global _take
        _take = self.take
        for target, name in ((self._serve, "dialler-jobs"), (self._reconcile_forever, "dialler-reconciler")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Both threads end: the worker within ``IDLE_SECONDS`` when idle (after its job, when busy).

        Not waited for longer: ``hotline sip`` must still stop its PBX in time (``hotline demo`` and the
        supervisor kill a service that takes long, and its Kamailio was left running)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)

    def _serve(self) -> None:
        """RQ's worker stops on signals only; here it ends after ``IDLE_SECONDS`` without a job and starts
        again unless ``hotline sip`` is stopping (between jobs it stops at once)."""
        while not self._stopping.is_set():
            worker = DiallerWorker([queue(self.settings, DIALLER_QUEUE)], connection=redis_connection(self.settings),
                                   worker_ttl=WORKER_TTL, name=f"dialler-{instance_name()}-{uuid.uuid4().hex[:8]}")
            try:
                worker.work(logging_level="WARNING", max_idle_time=IDLE_SECONDS)
            except (RedisError, OSError) as exc:
                log.warning("dialler queue: %s; trying again in %g s", exc, self.settings.database.retry_seconds)
                self._stopping.wait(self.settings.database.retry_seconds)

    def _reconcile_forever(self) -> None:
        """At start (what a previous process left), then every ``callbacks.reconcile_seconds``."""
        while not self._stopping.is_set():
            try:
                done = reconcile(self.settings)
                if done.enqueued or done.abandoned:
                    log.info("reconciler: %d callback(s) put back on RQ, %d abandoned attempt(s) ended",
                             done.enqueued, done.abandoned)
            except (SQLAlchemyError, RedisError) as exc:
                log.warning("reconciler: %s; next look in %g s", exc, self.settings.callbacks.reconcile_seconds)
            self._stopping.wait(self.settings.callbacks.reconcile_seconds)


def reconcile(settings: Settings, now: datetime | None = None) -> Reconciled:
    """Due callbacks without a live job get one; attempts whose process died are ended (and retried)."""
    now = now or utcnow()
    done = Reconciled()
    stale_before = now - timedelta(seconds=2 * settings.sip.dial_timeout)
    with session_scope(settings) as session:
        mark_due(session, now)
        for attempt in stale_attempts(session, stale_before):
            finish_attempt(session, settings, attempt, AttemptOutcome.ABANDONED, now=now)
            done.abandoned += 1
        due = automatic_due(session, now + timedelta(minutes=settings.callbacks.schedule_ahead_minutes))
    statuses = job_statuses(settings, [callback_job_id(d.callback_id, d.number) for d in due])
    for attempt, status in zip(due, statuses):
        # Still scheduled after its time: no RQ scheduler is moving it (none runs, or it died).
        late = attempt.at <= now - LATE_TOLERANCE
        if status in LIVE_STATUSES and not (late and status == JobStatus.SCHEDULED):
            continue
        enqueue_callback(settings, attempt.callback_id, attempt.number, None if late else attempt.at)
        done.enqueued += 1
    return done


def job_statuses(settings: Settings, job_ids: list[str]) -> list[JobStatus | None]:
    """Each job's RQ status (None: Redis does not have it), read in one round trip per thousand jobs."""
    statuses: list[JobStatus | None] = []
    connection = redis_connection(settings)
    for start in range(0, len(job_ids), STATUS_BATCH):
        pipeline = connection.pipeline(transaction=False)
        for job_id in job_ids[start:start + STATUS_BATCH]:
            pipeline.hget(Job.key_for(job_id), "status")
        statuses += [JobStatus(raw.decode()) if raw else None for raw in pipeline.execute()]
    return statuses


def job_status(settings: Settings, job_id: str) -> JobStatus | None:
    [status] = job_statuses(settings, [job_id])
    return status
