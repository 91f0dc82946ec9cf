"""Virtual hold: a waiting caller keeps their place and is called back when it comes, agent first.

After the queue's ``--virtual-hold-after`` seconds (or sooner, once their estimated wait reaches
``queues.virtual_hold_estimate_seconds``) a waiting caller hears "不想继续等待请按1，我们将保留您的
位置，稍后给您回电" over the music (once). On 1 they may key another number ended by # (# alone, or
nothing within ``queues.virtual_hold_number_seconds``: the number they call from); Hotline writes a
``virtual_hold`` callback with the queue and the moment they joined it (one per number: a caller who
keeps their place again is merged), confirms and hangs up. A placeholder takes their place in the
distributor's line, so callers behind them stay behind them. When the distributor offers the
placeholder an agent, the agent is rung first (with the customer's number); once they answer, the
attempt is claimed and the customer dialled and bridged to them (``Dialler.agent_first``): no
callback is dialled while no agent is free. A customer who does not answer is tried again after
``callbacks.retry_minutes``, at the head of the queue, up to ``callbacks.max_attempts``. The kept
places are read back from the database when ``hotline sip`` starts.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from sqlalchemy.exc import SQLAlchemyError

from config import Settings
from models.call import new_call_uid
from models.callback import CallbackState
from models.callbacks import CallbackError, keep_place, kept_places
from models.db import session_scope
from telephony import sip
from telephony.call_media import WATCH_INTERVAL, CallMedia, monotonic_of, wall_clock
from telephony.dialler import Dialler
from telephony.distributor import Distributor, QueueInfo, WaitingCall
from telephony.prompts import PromptLibrary

log = logging.getLogger(__name__)

KEEP = "1"
ESTIMATE_EVERY_SECONDS = 2.0
END_KEY = "#"


class VirtualHold:
    """The kept places of one ``hotline sip``: a placeholder and a thread for each."""

    def __init__(self, settings: Settings, distributor: Distributor, dialler: Dialler, stop: threading.Event) -> None:
        self.settings = settings
        self.distributor = distributor
        self.dialler = dialler
        self.stop = stop
        self.holding: set[int] = set()  # callbacks with a placeholder (or a call) in this process
        self._lock = threading.Lock()

    def keep(self, phone: str, waiting: WaitingCall) -> bool:
        """Write the kept place and put a placeholder in it; False when the database cannot take it now."""
        try:
            with session_scope(self.settings) as session:
                callback = keep_place(session, self.settings, phone=phone, queue_id=waiting.queue.id,
                                      queued_at=wall_clock(waiting.since))
                callback_id = callback.id
        except (SQLAlchemyError, CallbackError) as exc:
            log.warning("call %s: cannot keep the place of %s: %s", waiting.uid, phone, exc)
            return False
        log.info("call %s: %s keeps their place in %s (callback %s)", waiting.uid, phone, waiting.queue.name, callback_id)
        self._hold(callback_id, phone, waiting.queue, waiting.since)  # kept already: merged, one place
        return True

    def restore(self) -> None:
        """At start, on a thread: the places kept before, in their order, once the distributor knows the queues."""
        while not self.distributor.queues_read.wait(WATCH_INTERVAL * 10):
            if self.stop.is_set():
                return
        while True:
            try:
                with session_scope(self.settings) as session:
                    kept = [(c.id, c.phone, c.queue_id, c.queued_at) for c in kept_places(session)]
                break
            except SQLAlchemyError as exc:
                log.warning("virtual hold: cannot read the kept places (%s); retrying", exc.__class__.__name__)
                if self.stop.wait(self.settings.database.retry_seconds):
                    return
        for callback_id, phone, queue_id, queued_at in kept:
            queue = self.distributor.queue_by_id(queue_id)
            if queue is None:
                log.warning("virtual hold: callback %s kept a place in a queue that is gone", callback_id)
                continue
            self._hold(callback_id, phone, queue, monotonic_of(queued_at) if queued_at else time.monotonic())
        if kept:
            log.info("virtual hold: %d kept place(s) restored", len(kept))

    def _hold(self, callback_id: int, phone: str, queue: QueueInfo, since: float) -> None:
        with self._lock:
            if callback_id in self.holding:
                return
            self.holding.add(callback_id)
        placeholder = self.distributor.enqueue(new_call_uid(), phone, queue, since=since)
        threading.Thread(target=self._serve, args=(callback_id, placeholder), name=f"kept-{callback_id}",
                         daemon=True).start()

    def _serve(self, callback_id: int, placeholder: WaitingCall) -> None:
        try:
            self._until_done(callback_id, placeholder)
        finally:
            with self._lock:
                self.holding.discard(callback_id)

    def _until_done(self, callback_id: int, placeholder: WaitingCall) -> None:
        """Wait for an agent; ring them, then the customer; after no answer, wait and take the head of the line."""
        waiting = placeholder
        while not self.stop.is_set():
            if not waiting.offered.wait(WATCH_INTERVAL):
                continue
            offer = waiting.take_offer()
            if offer is None:
                continue
            after = self.dialler.agent_first(callback_id, offer, waiting)
            if after is None:
                continue  # the agent did not answer: the next one
            state, next_at = after
            if state is not CallbackState.SCHEDULED or next_at is None:
                return
            delay = (next_at - datetime.now(timezone.utc)).total_seconds()
            if self.stop.wait(max(0.0, delay)):
                return
            waiting = self.distributor.enqueue(new_call_uid(), waiting.caller, waiting.queue, at_head=True)


class KeepPlace:
    """One waiting caller's offer of virtual hold: said once, then 1 (a number, #) keeps their place."""

    def __init__(self, settings: Settings, prompts: PromptLibrary, keeper: VirtualHold, dialog: sip.Dialog,
                 call_media: CallMedia) -> None:
        self.rules = settings.queues
        self.prompts = prompts
        self.keeper = keeper
        self.dialog = dialog
        self.call_media = call_media
        self.offered = False
        self.keys: list[str] = []
        self.next_estimate = 0.0

    def kept(self, waiting: WaitingCall) -> bool:
        """Called as the caller waits: True once their place is kept and the call closed."""
        if not waiting.queue.timers.virtual_hold_after or waiting.offer is not None:
            return False
        leg = self.call_media.leg
        if not self.offered:
            if self._time_to_offer(waiting) and not leg.playing:
                self.offered = True
                leg.on_dtmf = self.dialog.on_dtmf = self.keys.append
                leg.play(self.prompts.render_text(self.rules.virtual_hold_prompt))
            return False
        if KEEP not in self.keys:
            return False
        self.keys.clear()
        number = self._number()
        if self.dialog.ended.is_set() or not self.keeper.keep(number, waiting):
            return False
        self._release_offer(waiting)
        leg.on_dtmf = self.dialog.on_dtmf = None
        leg.stop_loop()
        self.call_media.close_with(self.prompts.render_text(self.rules.virtual_hold_confirm), self.dialog)
        return True

    def _time_to_offer(self, waiting: WaitingCall) -> bool:
        """After the queue's wait, or sooner when the estimated wait reaches ``virtual_hold_estimate_seconds``."""
        if time.monotonic() - waiting.queued >= waiting.queue.timers.virtual_hold_after:
            return True
        threshold = self.rules.virtual_hold_estimate_seconds
        if not threshold or time.monotonic() < self.next_estimate:
            return False
        # The estimate counts the callers ahead under the distributor's lock: not on every turn of every caller.
        self.next_estimate = time.monotonic() + ESTIMATE_EVERY_SECONDS
        return self.keeper.distributor.estimated_wait(waiting)[1] >= threshold

    def _number(self) -> str:
        """Digits ended by #; # alone or none in time: the number the caller calls from."""
        leg = self.call_media.leg
        leg.stop_playback()
        leg.play(self.prompts.render_text(self.rules.virtual_hold_number_prompt))
        deadline = time.monotonic() + self.rules.virtual_hold_number_seconds
        while END_KEY not in self.keys and time.monotonic() < deadline and not self.dialog.ended.is_set():
            if leg.playing:
                deadline = time.monotonic() + self.rules.virtual_hold_number_seconds
            self.dialog.ended.wait(WATCH_INTERVAL)
        digits = "".join(self.keys).split(END_KEY)[0]
        self.keys.clear()
        return digits if len(digits) >= 3 and digits.isdigit() else self.dialog.caller

    def _release_offer(self, waiting: WaitingCall) -> None:
        """An agent offered while the caller keyed their number is given back: the placeholder has the place now."""
        if waiting.offered.is_set():
            offer = waiting.take_offer()
            if offer is not None:
                self.keeper.distributor.released(offer, waiting)
