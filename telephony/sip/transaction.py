"""SIP transactions over UDP (RFC 3261 §17): our requests retransmitted until answered, our
responses remembered so a retransmitted request is answered again without being handled twice.

Client side: a request is resent on T1, doubling (capped at T2 except for INVITE) until a
response arrives; without any response after 64 × T1 the transaction fails (Timer B for INVITE,
Timer F for the rest) and ``on_response(None)`` runs. An INVITE that got a provisional response
waits for its final one without a limit of its own: the dialog that sent it decides when to give
up (a CANCEL), after which ``give_up_after`` bounds the wait for the 487.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from telephony.sip.message import Message
from telephony.sip.timers import Timer, TimerThread

T1 = 0.5
T2 = 4.0
TIMEOUT = 64 * T1  # Timer B / Timer F: 32 s


@dataclass
class ClientTransaction:
    request: Message
    destination: tuple[str, int]
    on_response: Callable[[Message | None], None]
    deadline: float | None = field(default_factory=lambda: time.monotonic() + TIMEOUT)
    interval: float = T1
    provisional: bool = False
    timer: Timer | None = None


class Transactions:
    """The client transactions and sent responses of one endpoint, keyed by Via branch.

    Every method runs under the endpoint's lock (``lock``); ``on_response`` callbacks run on the
    receive or timer thread and must return quickly.
    """

    def __init__(self, send: Callable[[Message, tuple[str, int]], None], timers: TimerThread,
                 lock: threading.RLock) -> None:
        self._send = send
        self._timers = timers
        self._lock = lock
        self._client: dict[tuple[str, str], ClientTransaction] = {}  # (branch, method): a CANCEL shares its INVITE's branch
        self._responses: dict[tuple[str, str], tuple[float, Message]] = {}  # (branch, method) → sent

    # client side

    def request(self, msg: Message, destination: tuple[str, int],
                on_response: Callable[[Message | None], None]) -> None:
        tx = ClientTransaction(msg, destination, on_response)
        with self._lock:
            self._client[(msg.branch, msg.method)] = tx
        self._send(msg, destination)
        self._schedule(tx)

    def give_up_after(self, msg: Message, seconds: float) -> None:
        """End ``msg``'s transaction with ``on_response(None)`` unless it is answered within ``seconds``."""
        with self._lock:
            tx = self._client.get((msg.branch, msg.method))
            if tx is not None:
                tx.deadline = time.monotonic() + seconds
                if tx.timer is not None:
                    tx.timer.cancel()
                self._schedule(tx, min(tx.interval, seconds))

    def forget(self, msg: Message) -> None:
        with self._lock:
            tx = self._client.pop((msg.branch, msg.method), None)
        if tx is not None and tx.timer is not None:
            tx.timer.cancel()

    def on_response(self, msg: Message) -> bool:
        """Hand a response to its transaction; False when none is waiting for it (a stray or a retransmission)."""
        tx = self._client.get((msg.branch, msg.method))
        if tx is None:
            return False
        if msg.status < 200:
            if tx.request.method == "INVITE" and not tx.provisional:
                tx.provisional = True
                tx.deadline = None  # the dialog's own timeout (and CANCEL) ends the wait
            return True
        del self._client[(msg.branch, msg.method)]
        if tx.timer:
            tx.timer.cancel()
        tx.on_response(msg)
        return True

    def _schedule(self, tx: ClientTransaction, delay: float | None = None) -> None:
        tx.timer = self._timers.later(tx.interval if delay is None else delay, lambda: self._retransmit(tx))

    def _retransmit(self, tx: ClientTransaction) -> None:
        with self._lock:
            if self._client.get((tx.request.branch, tx.request.method)) is not tx:
                return
            timed_out = tx.deadline is not None and time.monotonic() >= tx.deadline
            if timed_out:
                del self._client[(tx.request.branch, tx.request.method)]
            else:
                if not tx.provisional:  # an INVITE with a 1xx waits for the answer silently
                    self._send(tx.request, tx.destination)
                tx.interval = tx.interval * 2 if tx.request.method == "INVITE" else min(tx.interval * 2, T2)
        if timed_out:
            tx.on_response(None)
        elif tx.deadline is not None:
            self._schedule(tx, min(tx.interval, max(0.0, tx.deadline - time.monotonic())))
        elif not tx.provisional:
            self._schedule(tx)

    # server side

    def sent_response(self, request: Message) -> Message | None:
        """Our response to an earlier copy of ``request`` (a retransmission), if any."""
        sent = self._responses.get((request.branch, request.method))
        return sent[1] if sent else None

    def remember_response(self, request: Message, response: Message) -> None:
        now = time.monotonic()
        self._responses[(request.branch, request.method)] = (now, response)
        for key, (sent_at, _) in list(self._responses.items()):
            if now - sent_at > TIMEOUT:
                del self._responses[key]
