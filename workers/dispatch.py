"""The only place that enqueues RQ jobs."""

from __future__ import annotations

from config import Settings
from workers.connection import queue


def enqueue_transcription(settings: Settings, recording_id: int) -> None:
    """Transcribe a finished recording into its ticket's notes."""
    queue(settings, "transcription").enqueue("workers.transcription.transcribe_recording", recording_id)
