"""``hotline web``, ``hotline worker``, ``hotline scheduler``: the long-running services, which wait for what they need.

While the database or Redis does not answer, a service logs one line ("waiting for the database
at …: connection refused; retrying every 2 s"), tries again every ``database.retry_seconds`` and
logs again when it answers. When waiting cannot help (a refused login, a database not initialised)
it exits 2 with the message instead. The worker and the scheduler also wait when they lose Redis
or the database while running, then start again.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

import click
from redis.exceptions import RedisError
from rq.exceptions import StopRequested
from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from models.db import Unavailable, check_database, database_problem
from workers.connection import DIALLER_QUEUE, LIVE_QUEUE, QUEUE_NAMES, check_redis, queue, redis_connection, redis_problem

log = logging.getLogger(__name__)

Check = Callable[[Settings], None]
RQ = TypeVar("RQ")  # an RQ Worker or RQScheduler


def service_problem(exc: BaseException, settings: Settings) -> Unavailable | None:
    """What a failure means for the user if it is about the database or Redis; None otherwise."""
    if isinstance(exc, Unavailable):
        return exc
    if isinstance(exc, SQLAlchemyError):
        return database_problem(exc, settings)
    if isinstance(exc, RedisError):
        return redis_problem(exc, settings)
    return None


class Patience:
    """The log of one wait: a line when it starts or its reason changes, and one when it ends."""

    def __init__(self, settings: Settings) -> None:
        self.retry_seconds = settings.database.retry_seconds
        self.waiting: Unavailable | None = None

    def failed(self, problem: Unavailable) -> None:
        """Note a try that failed; raises the problem itself when waiting cannot help."""
        if not problem.transient:
            raise problem
        if self.waiting is None or self.waiting.reason != problem.reason:
            log.warning("waiting for %s: %s; retrying every %g s", problem.subject, problem.reason,
                        self.retry_seconds)
        self.waiting = problem

    def succeeded(self) -> None:
        if self.waiting is not None:
            log.info("%s answers again", self.waiting.subject)
            self.waiting = None


def wait_until_available(settings: Settings, checks: Sequence[Check]) -> None:
    """Return once every check passes, trying every ``database.retry_seconds``."""
    for check in checks:
        patience = Patience(settings)
        while True:
            try:
                check(settings)
            except Unavailable as problem:
                patience.failed(problem)
                time.sleep(patience.retry_seconds)
                continue
            patience.succeeded()
            break


class StopRequest:
    """Notes SIGTERM/SIGINT reaching an RQ worker or scheduler, so a stop is never taken for an outage."""

    def __init__(self) -> None:
        self.requested = False

    def watch(self, rq_object: RQ) -> RQ:
        """Wrap ``rq_object``'s signal handler (RQ installs ``self.request_stop`` when it starts working)."""
        handler = rq_object.request_stop

        def request_stop(signum: int, frame: FrameType | None) -> None:
            self.requested = True
            try:
                handler(signum, frame)
            except RedisError:
                # RQ asks Redis whether a job runs; with Redis gone, stop without asking.
                raise StopRequested() from None

        rq_object.request_stop = request_stop
        return rq_object


def serve_through_outages(settings: Settings, checks: Sequence[Check], serve: Callable[[StopRequest], object]) -> None:
    """Run ``serve`` once everything answers; when it ends because something stopped answering, wait, run it again."""
    stop = StopRequest()
    while True:
        wait_until_available(settings, checks)
        try:
            serve(stop)
        except (SQLAlchemyError, RedisError) as exc:
            problem = service_problem(exc, settings)
            if stop.requested:
                return
            if problem is None or not problem.transient:
                raise
            log.warning("lost %s: %s", problem.subject, problem.reason)
        else:
            if stop.requested or _all_answer(settings, checks):
                return
        # The service's own handlers would talk to the server that is gone: plain ones while waiting.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _all_answer(settings: Settings, checks: Sequence[Check]) -> bool:
    try:
        for check in checks:
            check(settings)
    except Unavailable as problem:
        if not problem.transient:
            raise
        return False
    return True


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s hotline %(message)s")
    # Alembic announces every look at the schema revision; the start-up check is no news.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)


@click.command()
@click.option("--port", type=int, help="Port (default: web.port, 8080).")
@click.pass_context
def web(ctx: click.Context, port: int | None) -> None:
    """Run the web UI (once the database answers)."""
    from waitress import serve

    from hotline.cli import settings_of
    from webui import create_app

    settings = settings_of(ctx)
    _log_to_stderr()
    # Requests reconnect by themselves (pool_pre_ping): waiting matters only before the first one.
    wait_until_available(settings, [check_database])
    # Each open desk or wallboard holds a thread; with a request of look-ahead, waitress notices a
    # closed page at once (waitress.client_disconnected) and its thread is free again.
    serve(create_app(settings), host=settings.web.host, port=port or settings.web.port,
          threads=settings.web.threads, channel_request_lookahead=1)


@click.command()
@click.option("--queue", "queue_names", multiple=True, type=click.Choice([*QUEUE_NAMES, LIVE_QUEUE]),
              help="Queue to serve; repeatable (default: all but the live-transcription queue).")
@click.pass_context
def worker(ctx: click.Context, queue_names: tuple[str, ...]) -> None:
    """Run an RQ worker (with RQ's scheduler for enqueue_at jobs); speech models load once, here."""
    from hotline.cli import settings_of
    from workers.transcription import TranscriptionWorker

    settings = settings_of(ctx)
    _log_to_stderr()

    def work(stop: StopRequest) -> None:
        queues = [queue(settings, name) for name in queue_names or QUEUE_NAMES]
        stop.watch(TranscriptionWorker(queues, connection=queues[0].connection)).work(with_scheduler=True)

    serve_through_outages(settings, [check_redis, check_database], work)


@click.command()
@click.pass_context
def scheduler(ctx: click.Context) -> None:
    """Run RQ's scheduler alone: moves jobs due by enqueue_at onto their queues."""
    from rq.scheduler import RQScheduler

    from hotline.cli import settings_of

    settings = settings_of(ctx)
    _log_to_stderr()
    def work(stop: StopRequest) -> None:
        stop.watch(RQScheduler([*QUEUE_NAMES, LIVE_QUEUE, DIALLER_QUEUE], connection=redis_connection(settings))).work()

    serve_through_outages(settings, [check_redis], work)
