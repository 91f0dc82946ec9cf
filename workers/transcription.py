"""Transcription: recordings → ``Transcript`` rows → one note on the call's ticket.

Two RQ jobs, enqueued by ``workers.dispatch`` only:

- ``transcribe_live(recording_id)``, enqueued when the recording opens: tails the WAV while the
  call runs, so the note is ready seconds after the hang-up.
- ``transcribe_recording(recording_id)``, enqueued when it closes: skips when the live job
  finished; otherwise (live job crashed, not started, or a better model) transcribes the file.

The note is written exactly once per recording and model: the segments, the state DONE and
the note are one transaction, guarded by a conditional update, and every run checks for a
finished transcript first, so a job retried after its worker was killed writes nothing twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rq import Worker, get_current_job
from rq.job import Job
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased

from config import Settings, load_settings
from models.base import utcnow
from models.db import session_scope
from models.recording import Recording, RecordingState
from models.ticket import EventKind
from models.ticketing import add_note
from models.transcript import Channel, Transcript, TranscriptSegment, TranscriptState
from workers import notes, speech
from workers.speech import BadAudio, SpeechModel, Transcription

log = logging.getLogger(__name__)

# Live jobs run below the telephony process, so recognition never takes CPU from a call.
LIVE_NICENESS = 10
# The live job needs a few seconds after the hang-up; a batch job waits this long for it
# before it takes over (the live job's worker may have died).
LIVE_GRACE_SECONDS = 120.0
POLL_SECONDS = 0.25


class TranscriptionFailed(Exception):
    """Transcription cannot succeed until someone acts (bad audio, no model); not retried."""


@dataclass(frozen=True)
class Outcome:
    recording_id: int
    state: str  # done, skipped, failed
    transcript_id: int | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"recording_id": self.recording_id, "state": self.state, "transcript_id": self.transcript_id,
                "detail": self.detail}


# --- Models -----------------------------------------------------------------------------

def language_of(settings: Settings, recording: Recording) -> str:
    """The queue's language, else the customer's (e.g. a dialect model), else the configured default."""
    call = recording.call
    queue = call.queue if call else None
    customer = call.customer if call else None
    return ((queue.language if queue else None) or (customer.language if customer else None)
            or settings.transcription.default_language)


def model_dir(settings: Settings, language: str) -> str:
    """The configured model directory for ``language``; TranscriptionFailed naming the setting if none."""
    configured = settings.transcription.models.get(language)
    if not configured:
        raise TranscriptionFailed(
            f"no speech model configured for language {language!r} (set transcription.models.{language} "
            f"in {settings.config_path} to a Vosk model directory)")
    if not os.path.isdir(configured):
        raise TranscriptionFailed(f"speech model directory {configured} (transcription.models.{language}) is missing")
    return configured


def speech_model(settings: Settings, language: str) -> SpeechModel:
    """The Vosk model for ``language``, loaded once per process."""
    return speech.vosk_model(model_dir(settings, language))


def preload_models(settings: Settings) -> None:
    """Load every configured model now: forked work-horses then share it instead of loading their own."""
    for language, directory in settings.transcription.models.items():
        if os.path.isdir(directory):
            speech.vosk_model(directory)
        else:
            log.error("transcription.models.%s: %s is missing; its calls will not be transcribed", language, directory)


class TranscriptionWorker(Worker):
    """An RQ worker that loads the speech models once, before it forks a work-horse per job."""

    def work(self, *args: Any, **kwargs: Any) -> bool:
        _log_to_stderr()
        preload_models(load_settings())
        return super().work(*args, **kwargs)

    def subscribe(self) -> None:
        """RQ's command channel (shutdown, kill-horse), read in 1 s waits instead of RQ's 60 s.

        The worker's teardown waits for the read in progress: a worker told to stop (SIGTERM,
        ``hotline run`` stopping) took up to a minute to exit."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=1, daemon=True,
                                                       exception_handler=self._pubsub_exception_handler)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """A failure someone must act on (no model, bad audio) is one clear line, not a traceback."""
        if isinstance(exc_info[1], TranscriptionFailed):
            # Hotline registers no further exception handlers, so none is skipped here.
            log.error("%s: %s (the ticket says so; not retried)", job.description, exc_info[1])
            return
        super().handle_exception(job, *exc_info)


def _log_to_stderr() -> None:
    """Show the workers' own messages (model loads, failures) beside rq's, which logs only its own."""
    logger = logging.getLogger("workers")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


# --- Rows -------------------------------------------------------------------------------

def finished(session: Session, recording_id: int, model: str) -> Transcript | None:
    return session.scalar(select(Transcript).where(
        Transcript.recording_id == recording_id, Transcript.model == model,
        Transcript.state == TranscriptState.DONE))


def start(settings: Settings, recording_id: int, model: str, language: str, live: bool) -> int | None:
    """A RUNNING transcript (a previous unfinished attempt's row is reused); None if one is done."""
    with session_scope(settings) as session:
        if finished(session, recording_id, model):
            return None
        transcript = session.scalar(select(Transcript).where(
            Transcript.recording_id == recording_id, Transcript.model == model, Transcript.live == live,
            Transcript.state != TranscriptState.DONE).order_by(Transcript.id.desc()).limit(1))
        if transcript is None:
            transcript = Transcript(recording_id=recording_id, model=model, language=language, live=live)
            session.add(transcript)
        transcript.state, transcript.error = TranscriptState.RUNNING, None
        transcript.started_at, transcript.finished_at = utcnow(), None
        session.flush()
        return transcript.id


def claim(session: Session, transcript: Transcript) -> bool:
    """Mark the transcript DONE unless another of the same recording and model is; True if so."""
    # PostgreSQL: finishers of one recording queue on its row. SQLite: the UPDATE below holds
    # the database's write lock while it checks, which serialises them just the same.
    session.execute(select(Recording.id).where(Recording.id == transcript.recording_id).with_for_update())
    other = aliased(Transcript)
    claimed = session.execute(
        update(Transcript)
        .where(Transcript.id == transcript.id, ~exists().where(
            other.recording_id == transcript.recording_id, other.model == transcript.model,
            other.state == TranscriptState.DONE, other.id != transcript.id))
        .values(state=TranscriptState.DONE, finished_at=utcnow(), error=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(transcript)
    return bool(claimed)


def finish(settings: Settings, transcript_id: int, result: Transcription) -> bool:
    """Segments, state DONE and the ticket note in one transaction; False if another run won."""
    with session_scope(settings) as session:
        transcript = session.get_one(Transcript, transcript_id)
        if not claim(session, transcript):
            transcript.state = TranscriptState.FAILED
            transcript.error = "another transcription of this recording with this model finished first"
            return False
        session.add_all(
            TranscriptSegment(transcript=transcript, channel=Channel(s.channel), start=s.start, end=s.end,
                              text=s.text, words=s.words)
            for s in result.segments)
        text, summary = notes.transcript_note(result.segments, result.duration, settings.transcription.keywords)
        write_note(session, transcript.recording, text, {
            "transcript_id": transcript.id, "recording_id": transcript.recording_id, "model": transcript.model,
            "live": transcript.live, **summary.as_dict()})
        return True


def fail(settings: Settings, recording_id: int, transcript_id: int | None, reason: str, *, on_ticket: bool,
         model: str = "", language: str = "") -> None:
    """Record why the recording was not transcribed; a failure people must act on goes on the ticket."""
    log.error("recording %s not transcribed: %s", recording_id, reason)
    with session_scope(settings) as session:
        if transcript_id is None:
            transcript = Transcript(recording_id=recording_id, model=model, language=language)
            session.add(transcript)
        else:
            transcript = session.get_one(Transcript, transcript_id)
        transcript.state, transcript.error, transcript.finished_at = TranscriptState.FAILED, reason, utcnow()
        session.flush()
        if on_ticket:
            recording = session.get_one(Recording, recording_id)
            write_note(session, recording, notes.failure_note(reason, recording.path, recording.call_id),
                       {"recording_id": recording_id, "transcript_id": transcript.id, "error": reason})


def write_note(session: Session, recording: Recording, text: str, data: dict[str, Any]) -> None:
    ticket = recording.call.ticket if recording.call else None
    if ticket is None:
        log.warning("call %s has no ticket: transcript of recording %s kept without a note",
                    recording.call_id, recording.id)
        return
    add_note(session, ticket, text, kind=EventKind.TRANSCRIPT, data=data)


def recording_state(settings: Settings, recording_id: int) -> RecordingState:
    with session_scope(settings) as session:
        return session.get_one(Recording, recording_id).state


# --- Services ---------------------------------------------------------------------------

def transcribe(settings: Settings, recording_id: int, model: SpeechModel | None = None) -> Outcome:
    """Transcribe a closed recording into its ticket's notes, unless this model has done it already.

    Raises TranscriptionFailed (recorded on the ticket) when the audio or the configuration is
    at fault, and lets other errors through so the job is retried.
    """
    with session_scope(settings) as session:
        recording = session.get_one(Recording, recording_id)
        path, language = recording.path, language_of(settings, recording)
    try:
        model = model or speech_model(settings, language)
    except TranscriptionFailed as exc:
        fail(settings, recording_id, None, str(exc), on_ticket=True, language=language)
        raise
    wait_for_live(settings, recording_id, model.name)
    transcript_id = start(settings, recording_id, model.name, language, live=False)
    if transcript_id is None:
        return Outcome(recording_id, "skipped", detail=f"already transcribed with {model.name}")
    return run(settings, recording_id, transcript_id, lambda: speech.transcribe_file(path, model))


def follow(settings: Settings, recording_id: int, model: SpeechModel | None = None,
                    poll: float = POLL_SECONDS) -> Outcome:
    """Transcribe a recording while it is written; the note follows the hang-up within seconds.

    Leaves everything to the batch job when the recording closed before this started or no
    model is configured (the batch job reports that on the ticket, once).
    """
    with session_scope(settings) as session:
        recording = session.get_one(Recording, recording_id)
        path, language, state = recording.path, language_of(settings, recording), recording.state
    if state is not RecordingState.RECORDING:
        return Outcome(recording_id, "skipped", detail="recording closed before the live job started")
    try:
        model = model or speech_model(settings, language)
    except TranscriptionFailed as exc:
        return Outcome(recording_id, "skipped", detail=str(exc))
    transcript_id = start(settings, recording_id, model.name, language, live=True)
    if transcript_id is None:
        return Outcome(recording_id, "skipped", detail=f"already transcribed with {model.name}")

    def is_open() -> bool:
        return recording_state(settings, recording_id) is RecordingState.RECORDING

    return run(settings, recording_id, transcript_id,
               lambda: speech.transcribe_growing(path, model, is_open, poll=poll), report=False)


def run(settings: Settings, recording_id: int, transcript_id: int, recognize: Callable[[], Transcription],
        report: bool = True) -> Outcome:
    """Recognize, then store; bad audio fails for good (on the ticket if ``report``), the rest is retried."""
    try:
        result = recognize()
    except BadAudio as exc:
        fail(settings, recording_id, transcript_id, str(exc), on_ticket=report)
        raise TranscriptionFailed(str(exc)) from exc
    except Exception as exc:
        fail(settings, recording_id, transcript_id, f"{type(exc).__name__}: {exc}", on_ticket=False)
        raise
    if not finish(settings, transcript_id, result):
        return Outcome(recording_id, "skipped", transcript_id, "another run finished first")
    return Outcome(recording_id, "done", transcript_id, f"{len(result.segments)} segments, {result.duration:.1f} s")


def wait_for_live(settings: Settings, recording_id: int, model: str, grace: float = LIVE_GRACE_SECONDS) -> None:
    """Give a live transcription still running a little time to finish after the hang-up."""
    while True:
        with session_scope(settings) as session:
            recording = session.get_one(Recording, recording_id)
            running = session.scalar(select(Transcript.id).where(
                Transcript.recording_id == recording_id, Transcript.model == model, Transcript.live.is_(True),
                Transcript.state == TranscriptState.RUNNING))
            closed = recording.closed_at or utcnow()
        if running is None or utcnow() - closed > timedelta(seconds=grace):
            return
        time.sleep(POLL_SECONDS)


def pending_recordings(settings: Settings, *, call_id: int | None = None, since: datetime | None = None,
                       model: str | None = None) -> list[int]:
    """Closed recordings of a call, or since a time, with no finished transcript (by ``model`` if given)."""
    done = select(Transcript.id).where(Transcript.recording_id == Recording.id,
                                       Transcript.state == TranscriptState.DONE)
    if model is not None:
        done = done.where(Transcript.model == model)
    query = select(Recording.id).where(
        Recording.state.in_((RecordingState.COMPLETE, RecordingState.REPAIRED)), ~done.exists())
    if call_id is not None:
        query = query.where(Recording.call_id == call_id)
    if since is not None:
        query = query.where(Recording.started_at >= since)
    with session_scope(settings) as session:
        return list(session.scalars(query.order_by(Recording.id)))


# --- Jobs -------------------------------------------------------------------------------

def transcribe_recording(recording_id: int) -> dict[str, Any]:
    """RQ job: batch transcription of a closed recording."""
    return _job(lambda settings: transcribe(settings, recording_id))


def transcribe_live(recording_id: int) -> dict[str, Any]:
    """RQ job: live transcription while the call runs (not retried: the batch job is the fallback)."""
    # Only this work-horse (the worker forks one per job); absolute, so it never accumulates.
    os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), LIVE_NICENESS))
    return _job(lambda settings: follow(settings, recording_id))


def _job(action: Callable[[Settings], Outcome]) -> dict[str, Any]:
    try:
        return action(load_settings()).as_dict()
    except TranscriptionFailed:
        # Retrying cannot fix the audio or the configuration: fail now with the message.
        job = get_current_job()
        if job is not None:
            job.retries_left = 0
        raise
