"""The only place that enqueues RQ jobs."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rq import Retry
from rq.job import Job

from config import Settings
from workers.connection import DIALLER_QUEUE, LIVE_QUEUE, queue

# A killed worker or a locked database is worth retrying; bad audio stops at once (the job
# itself cancels its remaining retries), so a bad file never loops.
TRANSCRIPTION_RETRY = Retry(max=3, interval=[5, 30, 120])
# Room for an hour-long call at a real-time factor well under 1.
TRANSCRIPTION_TIMEOUT = 2 * 3600
# A live job lasts as long as the call; calls longer than this are cut off and left to the batch job.
LIVE_TIMEOUT = 4 * 3600
# A dialler job only claims its attempt and starts the call (the call runs on a thread of its own).
CALLBACK_TIMEOUT = 60
# Kept a day, so the reconciler can tell a job that ran from one Redis lost.
CALLBACK_RESULT_TTL = 24 * 3600


def enqueue_transcription(settings: Settings, recording_id: int) -> Job:
    """Transcribe a finished recording into its ticket's notes (skipped if the live job did it)."""
    return queue(settings, "transcription").enqueue(
        "workers.transcription.transcribe_recording", recording_id,
        retry=TRANSCRIPTION_RETRY, job_timeout=TRANSCRIPTION_TIMEOUT,
        description=f"transcribe recording {recording_id}",
    )


def enqueue_live_transcription(settings: Settings, recording_id: int) -> Job | None:
    """Transcribe a recording while it is being written; call when the recording opens.

    Nothing is enqueued when ``transcription.streaming`` is off. Not retried: after a crash the
    batch job, enqueued when the recording closes, takes over.
    """
    if not settings.transcription.streaming:
        return None
    return queue(settings, LIVE_QUEUE).enqueue(
        "workers.transcription.transcribe_live", recording_id,
        job_timeout=LIVE_TIMEOUT, description=f"live transcription of recording {recording_id}",
    )


def callback_job_id(callback_id: int, attempt: int) -> str:
    """One job id per attempt: enqueued again (by the reconciler), it is the same job."""
    return f"callback-{callback_id}-{attempt}"


def enqueue_callback(settings: Settings, callback_id: int, attempt: int, at: datetime | None = None,
                     staff_id: int | None = None) -> Job:
    """Dial attempt ``attempt`` of a callback at ``at`` (RQ's scheduler moves it to the dialler queue), or now.

    Only a ``hotline sip`` takes jobs from the dialler queue: the dialling needs its SIP endpoint.
    ``staff_id``: the person whose softphone rings first ("call now" on the callback list).
    """
    dialler = queue(settings, DIALLER_QUEUE)
    options: dict[str, Any] = {"job_id": callback_job_id(callback_id, attempt), "job_timeout": CALLBACK_TIMEOUT,
                               "result_ttl": CALLBACK_RESULT_TTL, "failure_ttl": CALLBACK_RESULT_TTL,
                               "description": f"callback {callback_id} attempt {attempt}"}
    function = "workers.dialler.dial_callback"
    if at is not None and at > datetime.now(timezone.utc):
        return dialler.enqueue_at(at, function, callback_id, attempt, staff_id, **options)
    return dialler.enqueue(function, callback_id, attempt, staff_id, **options)
