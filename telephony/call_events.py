"""What the call flows report — ringing, states, transfers, supervisors, recordings, alarms, the end — written by a writer of its own.

A call flow never waits on the database: each report is appended to a durable local journal
(``HOTLINE_HOME/journal/calls.jsonl``) and returns. One writer thread applies the reports to the
database in order, one transaction each, through the idempotent call-log functions of
``models.calllog``; while the database is locked or unreachable the reports wait in the journal,
and a restarted ``hotline sip`` replays what its predecessor left. Every timestamp is taken when
the flow reports, so a report applied an hour late still writes the true time.

Jobs follow their rows: once a report's transaction commits, its jobs (transcription) go to a
second lane (``jobs.jsonl``) whose own writer enqueues them through ``workers.dispatch``, so a
Redis outage holds back neither the rows nor the jobs behind it, and loses no job. After a crash
between a commit and the journal's pointer a report is applied again: no row, ticket or alarm
is doubled, and at worst a job is enqueued twice (harmless: the job's claim writes the note once).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import exc as sql_errors
from sqlalchemy.orm import Session

from config import Settings
from models.alarm import AlarmKind
from models.base import utcnow
from models.call import Call, CallDirection, CallOutcome, CallState, HangupParty, SupervisionMode, TransferKind
from models.calllog import (
    TRANSCRIBABLE, call_by_uid, close_recording, log_call, mark_bridged, mark_ended, mark_state, open_recording,
    raise_alarm, record_transfer, supervised, ticket_for_call, unfinished_calls, unfinished_recordings,
)
from models.callbacks import served_live
from models.db import session_scope
from models.recording import Recording, RecordingState
from models.user import User
from telephony.journal import Journal, JournalWriter
from telephony.recorder import RecordingError, file_sha256, repair_wav
from workers import dispatch

log = logging.getLogger(__name__)

# "Not now" from the database: locked, unreachable, connection lost. Anything else is a bad report.
DATABASE_DOWN = (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.TimeoutError)
REDIS_DOWN = (RedisError, OSError)
WAV_HEADER_BYTES = 44


class CallEvent(str, Enum):
    RINGING = "ringing"
    STATE = "state"
    TRANSFERRED = "transferred"
    SUPERVISED = "supervised"
    RECORDING_OPENED = "recording_opened"
    RECORDING_CLOSED = "recording_closed"
    ALARM = "alarm"
    ENDED = "ended"
    REPAIR = "repair"


class Job(str, Enum):
    LIVE_TRANSCRIPTION = "live_transcription"
    TRANSCRIPTION = "transcription"


ENQUEUE: dict[Job, Callable[[Settings, int], object]] = {
    Job.LIVE_TRANSCRIPTION: dispatch.enqueue_live_transcription,
    Job.TRANSCRIPTION: dispatch.enqueue_transcription,
}

# The jobs a report's transaction asks for once it commits: (job, recording id).
Jobs = list[tuple[Job, int]]


def journal_directory(settings: Settings) -> Path:
    return settings.home / "journal"


class CallEvents:
    """The call flows' reports for one ``hotline sip`` process; one instance per HOTLINE_HOME at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        retry = settings.database.retry_seconds
        self._reports = Journal(journal_directory(settings), "calls")
        try:
            self._jobs = Journal(journal_directory(settings), "jobs")
        except BaseException:
            self._reports.close()
            raise
        self._report_writer = JournalWriter(self._reports, self._apply, retry, "database", retry_on=DATABASE_DOWN)
        self._job_writer = JournalWriter(self._jobs, self._enqueue, retry, "redis", retry_on=REDIS_DOWN)
        self._appliers: dict[CallEvent, Callable[[Session, dict[str, Any], datetime], Jobs]] = {
            CallEvent.RINGING: self._apply_ringing,
            CallEvent.STATE: self._apply_state,
            CallEvent.TRANSFERRED: self._apply_transferred,
            CallEvent.SUPERVISED: self._apply_supervised,
            CallEvent.RECORDING_OPENED: self._apply_recording_opened,
            CallEvent.RECORDING_CLOSED: self._apply_recording_closed,
            CallEvent.ALARM: self._apply_alarm,
            CallEvent.ENDED: self._apply_ended,
            CallEvent.REPAIR: self._apply_repair,
        }

    # lifecycle

    def start(self) -> None:
        """Start both writers; they first replay what a previous process left in the journal."""
        self._report_writer.start()
        self._job_writer.start()

    def flush(self, timeout: float) -> bool:
        """Wait until every report so far is in the database and its jobs are enqueued."""
        deadline = time.monotonic() + timeout
        return (self._report_writer.flush(timeout)
                and self._job_writer.flush(max(0.0, deadline - time.monotonic())))

    def stop(self, timeout: float = 10.0) -> bool:
        """Apply what is pending (within ``timeout``), then stop; what is left waits in the journal.

        A writer still inside a slow write (a database lock) keeps its lane open, so what it
        finishes is still journaled; the process's exit ends it.
        """
        deadline = time.monotonic() + timeout
        done = self._report_writer.stop(timeout)
        done = self._job_writer.stop(max(0.0, deadline - time.monotonic())) and done
        for writer in (self._report_writer, self._job_writer):
            if writer.stopped:
                writer.journal.close()
        return done

    # what the call flows report (each returns as soon as the report is on disk)

    def ringing(self, uid: str, *, direction: CallDirection, caller: str, callee: str, sip_call_id: str,
                at: datetime | None = None, callback_id: int | None = None) -> None:
        """A new call: ``caller`` is the customer's number, ``callee`` the hotline's side, either way."""
        self._report(CallEvent.RINGING, uid, at, direction=CallDirection(direction).value, caller=caller,
                     callee=callee, sip_call_id=sip_call_id, callback_id=callback_id)

    def state(self, uid: str, state: CallState, at: datetime | None = None, *, agent_id: int | None = None,
              queue_id: int | None = None) -> None:
        """The call reached ``state`` (GREETING is the answer); BRIDGED with ``agent_id`` names the agent.

        QUEUED with ``queue_id`` names the queue, and links the call's ticket at once, so the agent's
        screen pops it the moment their phone rings.
        """
        self._report(CallEvent.STATE, uid, at, state=CallState(state).value, agent_id=agent_id, queue_id=queue_id)

    def transferred(self, uid: str, kind: TransferKind, from_: str, to: str, *, agent_id: int | None = None,
                    at: datetime | None = None) -> None:
        """The call passed from ``from_`` to ``to`` (agent or queue names); ``agent_id``: the agent who has it now."""
        self._report(CallEvent.TRANSFERRED, uid, at, kind=TransferKind(kind).value, from_=from_, to=to,
                     agent_id=agent_id)

    def supervised(self, uid: str, extension: str, mode: SupervisionMode | None, at: datetime | None = None) -> None:
        """The supervisor at ``extension`` joined the call in ``mode`` (listen, whisper, barge), changed to it,
        or left it (``mode`` None)."""
        self._report(CallEvent.SUPERVISED, uid, at, extension=extension,
                     mode=SupervisionMode(mode).value if mode is not None else None)

    def recording_opened(self, uid: str, path: str, *, sample_rate: int, channels: int,
                         at: datetime | None = None) -> None:
        """The call's WAV is being written; live transcription follows it once the row commits."""
        self._report(CallEvent.RECORDING_OPENED, uid, at, path=str(path), sample_rate=sample_rate, channels=channels)

    def recording_closed(self, uid: str, path: str, *, duration: float, sha256: str, size_bytes: int,
                         state: RecordingState, error: str | None, gap_seconds: float = 0.0,
                         longest_gap_seconds: float = 0.0, at: datetime | None = None) -> None:
        """The WAV is sealed; a COMPLETE or REPAIRED one is queued for transcription once the row commits."""
        self._report(CallEvent.RECORDING_CLOSED, uid, at, path=str(path), duration=duration, sha256=sha256,
                     size_bytes=size_bytes, state=RecordingState(state).value, error=error,
                     gap_seconds=gap_seconds, longest_gap_seconds=longest_gap_seconds)

    def alarm(self, uid: str | None, kind: AlarmKind, message: str, source: str = "sip",
              at: datetime | None = None) -> None:
        """A fault a person must see, on the call ``uid`` (None: not about one call)."""
        self._report(CallEvent.ALARM, uid, at, kind=AlarmKind(kind).value, message=message, source=source)

    def ended(self, uid: str, *, outcome: CallOutcome, hangup_by: HangupParty, at: datetime | None = None) -> None:
        """The call is over; unless it was REJECTED it is linked to a ticket (a missed call is followed up too)."""
        self._report(CallEvent.ENDED, uid, at, outcome=CallOutcome(outcome).value,
                     hangup_by=HangupParty(hangup_by).value)

    def repair_unfinished(self) -> None:
        """Seal the recordings (and end the calls) a killed process left open.

        Call it after ``start`` and before the first call is accepted: it runs in journal order,
        after whatever the previous process left, and before any report of this process.
        """
        self._report(CallEvent.REPAIR, None, None)

    def _report(self, event: CallEvent, uid: str | None, at: datetime | None, **fields: Any) -> None:
        at = at or utcnow()
        if at.tzinfo is None:
            raise ValueError(f"{event.value} of call {uid}: naive datetime {at}; report aware UTC times")
        report = {"event": event.value, "uid": uid, "at": at.isoformat(), **fields}
        try:
            self._reports.append(report)
        except OSError as exc:
            # The call goes on (a full disk must not cost it); the report survives in the log.
            log.error("cannot journal a call event (%s); it is only in this log: %s", exc,
                      json.dumps(report, ensure_ascii=False))

    # the writers' side

    def _apply(self, report: dict[str, Any]) -> None:
        """One report in one transaction; its jobs are journaled once the transaction commits."""
        applier = self._appliers[CallEvent(report["event"])]
        with session_scope(self.settings) as session:
            jobs = applier(session, report, datetime.fromisoformat(report["at"]))
        for job, recording_id in jobs:
            self._jobs.append({"job": job.value, "recording_id": recording_id})

    def _enqueue(self, entry: dict[str, Any]) -> None:
        ENQUEUE[Job(entry["job"])](self.settings, int(entry["recording_id"]))

    def _apply_ringing(self, session: Session, report: dict[str, Any], at: datetime) -> Jobs:
        log_call(session, self.settings, uid=report["uid"], direction=CallDirection(report["direction"]),
                 caller=report["caller"], callee=report["callee"], sip_call_id=report["sip_call_id"], at=at,
                 callback_id=report["callback_id"])
        return []

    def _apply_state(self, session: Session, report: dict[str, Any], at: datetime) -> Jobs:
        call, state = _call(session, report["uid"]), CallState(report["state"])
        if state is CallState.BRIDGED and report["agent_id"] is not None:
            mark_bridged(session, call, session.get_one(User, report["agent_id"]), at)
            if call.direction is CallDirection.INBOUND and call.caller_raw:
                served_live(session, self.settings, call.caller_raw)
            return []
        queue_id = report.get("queue_id")  # reports journaled before queues existed have none
        if queue_id is not None and queue_id != call.queue_id:
            call.queue_id = queue_id
        mark_state(session, call, state, at)
        if state is CallState.QUEUED:
            ticket_for_call(session, self.settings, call, at=at)
        return []

    def _apply_transferred(self, session: Session, report: dict[str, Any], at: datetime) -> Jobs:
        call = _call(session, report["uid"])
        record_transfer(session, call, TransferKind(report["kind"]), report["from_"], report["to"], at)
        if report["agent_id"] is not None:  # the new agent serves the caller now; the owner stays (首问负责制)
            mark_bridged(session, call, session.get_one(User, report["agent_id"]), at)
        return []

    def _apply_supervised(self, session: Session, report: dict[str, Any], at: datetime) -> Jobs:
        mode = SupervisionMode(report["mode"]) if report["mode"] is not None else None
        supervised(session, _call(session, report["uid"]), report["extension"], mode, at)
        return []

    def _apply_recording_opened(self, session: Session, report: dict[str, Any], at: datetime) -> Jobs:
        recording = open_recording(session, self.settings, _call(session, report["uid"]), report["path"],
                                   sample_rate=report["sample_rate"], channels=report["channels"], at=at)
        return [(Job.LIVE_TRANSCRIPTION, recording.id)]

    def _apply_recording_closed(self, session: Session, report: dict[str, Any], at: datetime) -> Jobs:
        # Opened here if its opening was never reported (the WAV could not be created): the
        # failure is kept on the call all the same.
        recording = open_recording(session, self.settings, _call(session, report["uid"]), report["path"], at=at)
        close_recording(session, self.settings, recording, duration=report["duration"], sha256=report["sha256"],
                        size_bytes=report["size_bytes"], state=RecordingState(report["state"]),
                        error=report["error"], gap_seconds=report["gap_seconds"],
                        longest_gap_seconds=report["longest_gap_seconds"], at=at)
        # Asked for again when the report is applied again: its first commit may have lost the job.
        return [(Job.TRANSCRIPTION, recording.id)] if recording.state in TRANSCRIBABLE else []

    def _apply_alarm(self, session: Session, report: dict[str, Any], at: datetime) -> Jobs:
        call = call_by_uid(session, report["uid"]) if report["uid"] else None
        raise_alarm(session, AlarmKind(report["kind"]), report["message"], call=call, source=report["source"], at=at)
        return []

    def _apply_ended(self, session: Session, report: dict[str, Any], at: datetime) -> Jobs:
        call, outcome = _call(session, report["uid"]), CallOutcome(report["outcome"])
        mark_ended(session, call, outcome=outcome, hangup_by=HangupParty(report["hangup_by"]), at=at)
        if outcome is not CallOutcome.REJECTED:  # a missed call is followed up too
            ticket_for_call(session, self.settings, call, at=at)
        return []

    def _apply_repair(self, session: Session, report: dict[str, Any], at: datetime) -> Jobs:
        """Repair the WAVs left open and report their closing (and their calls' end) as this process's own.

        Reported, not written here, so sealing them takes the same idempotent path as any call:
        applied again after a crash, the repair reports the same closings again, at the same time.
        """
        found = unfinished_recordings(session)
        for recording in found:
            self._report_repaired(recording, at)
        if found:
            log.info("repairing %d recordings a previous process left open", len(found))
        sealed = {recording.call_id for recording in found}
        left = [call for call in unfinished_calls(session) if call.id not in sealed]
        for call in left:  # e.g. queued with a recording that had failed: no call stays stuck in a queue
            self.ended(call.uid, outcome=CallOutcome.FAILED, hangup_by=HangupParty.SYSTEM, at=at)
        if left:
            log.info("ending %d calls a previous process left unfinished", len(left))
        return []

    def _report_repaired(self, recording: Recording, at: datetime) -> None:
        call: Call = recording.call
        path = Path(recording.path)
        try:
            repair_wav(path)
            size = path.stat().st_size
            duration = (size - WAV_HEADER_BYTES) / (recording.sample_rate * recording.channels * 2)
            self.recording_closed(call.uid, recording.path, duration=duration, sha256=file_sha256(path),
                                  size_bytes=size, state=RecordingState.REPAIRED, error=None, at=at)
        except (OSError, RecordingError) as exc:
            self.recording_closed(call.uid, recording.path, duration=0.0, sha256="", size_bytes=0,
                                  state=RecordingState.FAILED, error=f"repair failed: {exc}", at=at)
            self.alarm(call.uid, AlarmKind.RECORDING_FAILED, f"recording {path} lost: {exc}", at=at)
        if call.state is not CallState.ENDED:
            self.ended(call.uid, outcome=CallOutcome.FAILED, hangup_by=HangupParty.SYSTEM, at=at)


def _call(session: Session, uid: str) -> Call:
    call = call_by_uid(session, uid)
    if call is None:
        raise LookupError(f"no call with uid {uid}: its ringing was never applied")
    return call
