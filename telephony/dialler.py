"""Callbacks placed by ``hotline sip``: each attempt claimed, dialled, surveyed or bridged to staff, reported.

``Dialler.take`` is what the dialler queue's RQ job calls (``workers/dialler.py``): it applies the
rules before a dial (``models/callbacks.py`` ``start_attempt``: the claim, calling hours, the
do-not-call list) and starts the attempt on a thread of its own, so one worker thread keeps
every callback on time. An automatic callback dials the customer and runs the survey
(``telephony/survey.py``); a staff callback rings the staff member's softphone first (with the
customer's number as caller ID), then dials the customer and bridges the two through the media
engine. Either call is logged and recorded like every call (``OutboundFlow``). The attempt's end —
answers, retries, unreachable — is written when the call is over; the database being down then
only delays it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config import Settings
from models.call import CallOutcome, CallState, new_call_uid
from models.callback import AttemptOutcome, Callback, CallbackAttempt, CallbackState
from models.callbacks import KEYS, WAITING, answered, dialled, finish_attempt, record_answers, start_attempt
from models.db import session_scope
from models.user import User
from telephony import sip
from telephony.agent_call import AgentCall, Ring
from telephony.call_media import WATCH_INTERVAL
from telephony.distributor import Distributor, Offer, WaitingCall
from telephony.media import MediaEngine
from telephony.outbound import OutboundCall, OutboundFlow
from telephony.prompts import PromptLibrary
from telephony.survey import Survey, SurveyResult
from workers.dialler import instance_name

log = logging.getLogger(__name__)

T = TypeVar("T")
# How a dialled call that never got answered counts as an attempt.
UNANSWERED = {CallOutcome.NO_ANSWER: AttemptOutcome.NO_ANSWER, CallOutcome.BUSY: AttemptOutcome.BUSY,
              CallOutcome.REJECTED: AttemptOutcome.REJECTED}
END_TIMEOUT = 30.0  # after a hang-up, for the call's recording to be sealed and reported


@dataclass(frozen=True)
class Plan:
    """One claimed attempt, as the call thread needs it (no database rows across threads)."""

    attempt_id: int
    callback_id: int
    phone: str
    staff: Offer | None = None  # staff first (or the agent, for a kept place): who rings first; None: the survey


class Dialler:
    """Takes the dialler queue's jobs in ``hotline sip`` and runs each attempt's call."""

    def __init__(self, settings: Settings, endpoint: sip.Endpoint, engine: MediaEngine, outbound: OutboundFlow,
                 distributor: Distributor, prompts: Callable[[], PromptLibrary], stop: threading.Event) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.engine = engine
        self.outbound = outbound
        self.distributor = distributor
        self.prompts = prompts
        self.stop = stop
        self.running: set[threading.Thread] = set()

    def take(self, callback_id: int, number: int, staff_id: int | None = None) -> str:
        """The RQ job: claim attempt ``number`` and start its call; what happened, for the job's result."""
        with session_scope(self.settings) as session:
            start = start_attempt(session, self.settings, callback_id, number, by=instance_name(), staff_id=staff_id)
            attempt = start.attempt
            plan = None if attempt is None else Plan(
                attempt.id, callback_id, attempt.callback.phone,
                self._staff(session, staff_id) if staff_id is not None else None)
        log.info("callback %s attempt %s: %s", callback_id, number, start.why)
        if plan is not None:
            thread = threading.Thread(target=self._run, args=(plan,), name=f"callback-{callback_id}", daemon=True)
            self.running.add(thread)
            thread.start()
        return start.why

    def _staff(self, session: Session, staff_id: int) -> Offer:
        user = session.get_one(User, staff_id)
        if not user.extension:
            raise ValueError(f"{user.username} has no extension: staff-first calls ring the staff member's softphone")
        return Offer(agent_id=0, username=user.username, user_id=user.id, extension=user.extension, call_uid="")

    def _run(self, plan: Plan) -> None:
        result = SurveyResult(AttemptOutcome.FAILED)
        try:
            result = self._staff_first(plan) if plan.staff is not None else self._survey(plan)
        except Exception:
            log.exception("callback %s failed", plan.callback_id)
        finally:
            self._write(lambda session: self._finish(session, plan, result))
            self.running.discard(threading.current_thread())

    # the automatic survey

    def _survey(self, plan: Plan) -> SurveyResult:
        call = self._dial_customer(plan, new_call_uid())
        if not call.wait_answered(self.settings.sip.dial_timeout + 5):
            return self._unanswered(call)
        self._write(lambda session: answered(session, session.get_one(CallbackAttempt, plan.attempt_id)))
        result = Survey(self.settings, self.prompts(), call, self.stop).run()
        call.wait_done(END_TIMEOUT)
        return result

    def _dial_customer(self, plan: Plan, uid: str) -> OutboundCall:
        call = self.outbound.dial(plan.phone, callback_id=plan.callback_id, uid=uid)
        staff_id = plan.staff.user_id if plan.staff else None
        self._write(lambda session: dialled(session, session.get_one(CallbackAttempt, plan.attempt_id), call.uid,
                                            staff_id=staff_id))
        return call

    def _unanswered(self, call: OutboundCall) -> SurveyResult:
        call.hangup()
        call.wait_done(END_TIMEOUT)
        return SurveyResult(UNANSWERED.get(call.outcome or CallOutcome.FAILED, AttemptOutcome.FAILED))

    # staff first

    def _staff_first(self, plan: Plan) -> SurveyResult:
        """Ring the staff member; once they answer, dial the customer and bridge the two."""
        assert plan.staff is not None
        uid = new_call_uid()
        claimed = self.distributor.claim(plan.staff.extension, uid)  # an available agent is busy on it now
        staff = AgentCall(self.settings, self.endpoint, self.engine, claimed or plan.staff)
        if staff.ring(plan.phone, self.stop, self.settings.queues.ring_timeout) is not Ring.ANSWERED:
            staff.close()
            if claimed:
                self.distributor.released(claimed)
            return SurveyResult(AttemptOutcome.STAFF_UNAVAILABLE)
        return self._bridge_customer(plan, uid, staff, claimed)

    def agent_first(self, callback_id: int, offer: Offer,
                    waiting: WaitingCall) -> tuple[CallbackState, datetime | None] | None:
        """A kept place's turn (virtual hold): ring the agent the distributor reserved; once they answer,
        claim the attempt and dial the customer. The callback's state after the attempt (and its next
        time), or None when the agent did not answer (the place is offered to the next agent)."""
        gone = self._write(lambda session: _not_waiting(session, callback_id))
        if gone is not None:  # cancelled meanwhile (the customer called and was served): no agent is rung
            log.info("callback %s is %s: its place is given up", callback_id, gone[0].value)
            self.distributor.leave(waiting)
            self.distributor.released(offer)
            return gone
        agent = AgentCall(self.settings, self.endpoint, self.engine, offer)
        ring = agent.ring(waiting.caller, self.stop, waiting.queue.timers.ring_timeout)
        if ring is not Ring.ANSWERED:
            agent.close()
            (self.distributor.unreachable if ring is Ring.UNREACHABLE else self.distributor.missed)(offer, waiting)
            return None
        self.distributor.leave(waiting)
        with session_scope(self.settings) as session:
            callback = session.get_one(Callback, callback_id)
            start = start_attempt(session, self.settings, callback_id, callback.attempts + 1, by=instance_name(),
                                  staff_id=offer.user_id)
            attempt = start.attempt
            plan = None if attempt is None else Plan(attempt.id, callback_id, callback.phone, offer)
            state, next_at = callback.state, callback.next_attempt_at
        if plan is None:
            log.info("callback %s: %s; agent %s released", callback_id, start.why, offer.username)
            agent.close()
            self.distributor.released(offer)
            return state, next_at
        result = self._bridge_customer(plan, offer.call_uid, agent, offer)
        return self._write(lambda session: self._finish(session, plan, result))

    def _bridge_customer(self, plan: Plan, uid: str, staff: AgentCall, claimed: Offer | None) -> SurveyResult:
        """The staff member (or agent) answered: dial the customer, bridge and record the two."""
        assert plan.staff is not None
        wrap_up = 0.0  # nobody to talk about if the customer never answers
        if claimed:
            self.distributor.answered(claimed)  # on a call from their answer: the watchdog leaves them alone
        try:
            staff.connect()
            call = self._dial_customer(plan, uid)
            if not self._customer_answers(call, staff):
                return self._unanswered(call)
            self._write(lambda session: answered(session, session.get_one(CallbackAttempt, plan.attempt_id)))
            staff.bridge(call.leg)
            self.outbound.events.state(uid, CallState.BRIDGED, agent_id=plan.staff.user_id)
            self._until_either_hangs_up(call, staff)
            call.wait_done(END_TIMEOUT)
            wrap_up = self.settings.queues.wrap_up_seconds
            return SurveyResult(AttemptOutcome.COMPLETED)
        finally:
            staff.close()
            if claimed:
                self.distributor.finished(claimed, wrap_up)

    def _customer_answers(self, call: OutboundCall, staff: AgentCall) -> bool:
        """Wait for the customer's answer; the staff member hanging up meanwhile gives the call up."""
        assert staff.dialog is not None
        while not call.dialog.ended.is_set():
            if call.wait_answered(WATCH_INTERVAL):
                return True
            if staff.dialog.ended.is_set() or self.stop.is_set():
                call.hangup()
                return False
        return call.dialog.answered.is_set()

    def _until_either_hangs_up(self, call: OutboundCall, staff: AgentCall) -> None:
        assert staff.dialog is not None
        while not (call.dialog.ended.is_set() or staff.dialog.ended.is_set() or self.stop.is_set()):
            call.dialog.ended.wait(WATCH_INTERVAL)
        call.hangup()
        staff.hangup()

    # the end of an attempt

    def _finish(self, session: Session, plan: Plan, result: SurveyResult) -> tuple[CallbackState, datetime | None]:
        attempt = session.get_one(CallbackAttempt, plan.attempt_id)
        callback = finish_attempt(session, self.settings, attempt, result.outcome, machine=result.machine)
        if result.key is not None:
            answers: dict[str, object] = {"key": result.key, "keys": result.keys, "call_uid": attempt.call_uid}
            if result.answer is not None:
                answers["improve_answer"] = result.answer  # its span in the recording; the transcript has its words
            record_answers(session, self.settings, callback, satisfaction=KEYS[result.key], answers=answers)
        log.info("callback %s attempt %s: %s → %s", plan.callback_id, attempt.number, result.outcome.value,
                 callback.state.value)
        return callback.state, callback.next_attempt_at

    def _write(self, write: Callable[[Session], T]) -> T | None:
        """Write now, or as soon as the database answers again (never dropped while the process lives)."""
        while True:
            try:
                with session_scope(self.settings) as session:
                    return write(session)
            except SQLAlchemyError as exc:
                log.warning("callback: the database does not answer (%s); retrying in %g s", exc,
                            self.settings.database.retry_seconds)
                if self.stop.wait(self.settings.database.retry_seconds):
                    return None


def _not_waiting(session: Session, callback_id: int) -> tuple[CallbackState, datetime | None] | None:
    """The callback's state (and next time) when it no longer waits for an attempt; None while it does."""
    callback = session.get_one(Callback, callback_id)
    return None if callback.state in WAITING else (callback.state, callback.next_attempt_at)
