"""One timer thread for every delayed SIP action: retransmissions, refreshes, keep-alives."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Timer:
    """A pending action of the timer thread; ``cancel()`` is idempotent."""

    def __init__(self, due: float, action: Callable[[], None]) -> None:
        self.due, self.action, self.cancelled = due, action, False

    def cancel(self) -> None:
        self.cancelled = True


class TimerThread:
    """One thread running every delayed action, in due order; an action that raises is logged."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="sip-timers", daemon=True)
        self._thread.start()

    def later(self, delay: float, action: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, action)
        with self._cv:
            heapq.heappush(self._heap, (timer.due, next(self._seq), timer))
            self._cv.notify()
        return timer

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify()
        self._thread.join(2)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._running and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if not self._running:
                    return
                _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                try:
                    timer.action()
                except Exception:
                    log.exception("timer action failed")
