"""The only place that enqueues RQ jobs."""

from __future__ import annotations

from rq import Retry
from rq.job import Job

from config import Settings
from workers.connection import LIVE_QUEUE, queue

# A killed worker or a locked database is worth retrying; bad audio stops at once (the job
# itself cancels its remaining retries), so a bad file never loops.
TRANSCRIPTION_RETRY = Retry(max=3, interval=[5, 30, 120])
# Room for an hour-long call at a real-time factor well under 1.
TRANSCRIPTION_TIMEOUT = 2 * 3600
# A live job lasts as long as the call; calls longer than this are cut off and left to the batch job.
LIVE_TIMEOUT = 4 * 3600


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
