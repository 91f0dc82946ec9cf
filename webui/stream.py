"""Server-sent events: a page's live parts, rebuilt from the database whenever something may have changed.

The bus (``workers.bus``) only says "look again": each open page rebuilds what it shows from the
database on a change that concerns it, and at least every ``bus.POLL_SECONDS`` anyway (waits count
up, transcripts grow, and nothing is missed while Redis is down), and sends it only when it
differs. Rebuilding from the database is also what makes a page right again after a restart of
``hotline web``: the browser reconnects within ``RETRY_MS`` and gets everything afresh.

One open page holds one server thread (``web.threads``) until the browser closes it; a comment
every ``KEEPALIVE_SECONDS`` keeps proxies from cutting a quiet stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from flask import Response, current_app, g, request, stream_with_context
from sqlalchemy.orm import Session

from config import Settings
from workers import bus

RETRY_MS = 1000
KEEPALIVE_SECONDS = 15.0
WAKE_UPS_PER_POLL = 4

Changes = list[dict[str, Any]]
T = TypeVar("T")


def updates(settings: Settings, build: Callable[[], Any], concerns: Callable[[Changes], bool] = lambda _: True,
            *, poll_seconds: float = bus.POLL_SECONDS, gone: Callable[[], bool] = lambda: False) -> Iterator[str]:
    """The stream of ``build()``'s results as events: within ``poll_seconds``, then whenever it differs.

    ``build`` runs again when the bus reports changes that ``concerns`` it, and at least every
    ``poll_seconds``; it returns anything JSON can carry. The stream ends when ``gone()`` says the
    page was closed.
    """
    # Woken often, so changes that concern other pages do not postpone the poll.
    feed = bus.changes(settings, timeout=poll_seconds / WAKE_UPS_PER_POLL)
    try:
        # The first build waits for the subscription, so no change after the page was rendered slips by.
        next(feed)
        last = build()
        yield f"retry: {RETRY_MS}\n" + event(last)
        built = sent = time.monotonic()
        for changes in feed:
            if gone():
                return
            now = time.monotonic()
            if (changes and concerns(changes)) or now - built >= poll_seconds:
                payload, built = build(), now
                if payload != last:
                    last, sent = payload, now
                    yield event(payload)
                    continue
            if now - sent >= KEEPALIVE_SECONDS:
                sent = now
                yield ": keep-alive\n\n"
    finally:
        feed.close()  # the page is gone: unsubscribe now rather than when collected


def event(payload: Any) -> str:
    """One ``message`` event; JSON keeps it on one ``data:`` line (newlines in strings are escaped)."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def on_fresh_session(build: Callable[[Session], T]) -> Callable[[], T]:
    """``build`` on a session of its own each time, so every rebuild reads what is committed now."""
    sessions = current_app.extensions["hotline_sessions"]

    def run() -> T:
        with sessions() as session:
            return build(session)

    return run


def event_stream(settings: Settings, build: Callable[[], Any],
                 concerns: Callable[[Changes], bool] = lambda _: True) -> Response:
    """The response streaming ``updates`` of ``build`` (inside the request: templates, translations, CSRF)."""
    # The request's own session (the login) is done with: a page open for hours must not hold a
    # database connection, only borrow one per rebuild.
    request_session = g.pop("db", None)
    if request_session is not None:
        request_session.close()
    # Waitress says when the browser closed the page, so its thread is free at once, not at the next write.
    gone = request.environ.get("waitress.client_disconnected", lambda: False)
    return Response(stream_with_context(updates(settings, build, concerns, gone=gone)),
                    mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
