"""One call's media: the customer's leg on the media engine and the call's recording.

Both call flows use it the same way: ``open`` a leg before the SIP answer, ``record`` (the WAV
exists before the first frame), ``close_with`` a closing prompt, then ``finish`` — which seals
the WAV and reports it, with the time the media clock lost (written as silence, so the file keeps
the call's length), to the call log. A recording that cannot be written raises an alarm and the
call goes on: a call never goes unrecorded silently.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from config import Settings
from models.alarm import AlarmKind
from models.recording import RecordingState
from telephony import sip
from telephony.call_events import CallEvents
from telephony.g711 import SAMPLE_RATE
from telephony.media import MediaEngine, MediaLeg
from telephony.recorder import RecordingError, StereoWavRecorder

log = logging.getLogger(__name__)

CLOSING_TIMEOUT = 15.0
WATCH_INTERVAL = 0.1


class CallMedia:
    """The media leg and the recording of the call ``uid``, whose far end is ``dialog``."""

    def __init__(self, settings: Settings, engine: MediaEngine, events: CallEvents, uid: str) -> None:
        self.settings = settings
        self.events = events
        self.uid = uid
        self.leg: MediaLeg = engine.open_leg()
        self.recorder: StereoWavRecorder | None = None
        self.path = recording_path(settings, uid)
        self.recording_error: str | None = None

    def connect(self, dialog: sip.Dialog) -> None:
        """Send to the dialog's stream, and follow it when a re-INVITE moves it."""
        remote, codec = dialog.remote_media, dialog.codec
        assert remote is not None and codec is not None
        self.leg.connect((remote.address, remote.port), codec.payload_type, codec.dtmf_payload_type)

        def follow(moved: sip.Dialog) -> None:
            if moved.remote_media is not None and not moved.on_hold:
                self.leg.connect((moved.remote_media.address, moved.remote_media.port), codec.payload_type,
                                 codec.dtmf_payload_type)

        dialog.on_media = follow

    def record(self) -> None:
        """Open the WAV now, so the recording covers the call from its first frame."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.recorder = StereoWavRecorder(self.path, sample_rate=SAMPLE_RATE)
        except (OSError, RecordingError) as exc:
            self._failed(str(exc))  # the call goes on, with an alarm and a FAILED row
            return
        self.leg.on_recorder_error = lambda exc: self._failed(str(exc))
        self.leg.attach_recorder(self.recorder)

    def report_recording(self) -> None:
        self.events.recording_opened(self.uid, str(self.path), sample_rate=SAMPLE_RATE, channels=2)

    def close_with(self, pcm: bytes, dialog: sip.Dialog) -> None:
        """Play the closing prompt, then BYE (unless the far end hangs up first)."""
        self.leg.stop_playback()
        self.leg.play(pcm)
        deadline = time.monotonic() + CLOSING_TIMEOUT
        while self.leg.playing and time.monotonic() < deadline and not dialog.ended.is_set():
            self.leg.wait_played(WATCH_INTERVAL)
        time.sleep(0.1)  # the last frames leave the media thread before the BYE
        dialog.hangup()

    def finish(self, *, reported: bool) -> None:
        """Seal the WAV; ``reported``: the recording was reported open, so report how it closed."""
        leg = self.leg
        leg.detach_recorder()
        leg.close()
        result = None
        if self.recorder is not None:
            try:
                result = self.recorder.close()
            except (OSError, RecordingError) as exc:
                self._failed(str(exc))
        if not reported:
            return
        gap, longest = leg.gap_seconds, leg.longest_gap_seconds
        if longest > self.settings.recording.gap_alarm_seconds:
            self._alarm(AlarmKind.RECORDING_GAP,
                        f"recording {self.path.name} lost {gap:.1f} s (longest gap {longest:.1f} s, written as "
                        f"silence): the media clock fell behind")
        failed = self.recording_error is not None or result is None
        self.events.recording_closed(
            self.uid, str(self.path), duration=result.duration if result else 0.0,
            sha256=result.sha256 if result else "", size_bytes=result.size_bytes if result else 0,
            state=RecordingState.FAILED if failed else RecordingState.COMPLETE,
            error=self.recording_error or (None if result else "not recorded"),
            gap_seconds=gap, longest_gap_seconds=longest)

    def _failed(self, error: str) -> None:
        if self.recording_error is not None:
            return
        self.recording_error = error
        self._alarm(AlarmKind.RECORDING_FAILED, f"call {self.uid} is not being recorded: {error}")

    def _alarm(self, kind: AlarmKind, message: str) -> None:
        log.error("%s", message)
        self.events.alarm(self.uid, kind, message)


def wall_clock(monotonic: float) -> datetime:
    """The UTC time of a ``time.monotonic()`` reading (when an INVITE arrived, when a caller joined a queue)."""
    return datetime.now(timezone.utc) - timedelta(seconds=time.monotonic() - monotonic)


def monotonic_of(at: datetime) -> float:
    """The ``time.monotonic()`` reading of a UTC time (a kept place's moment, read back after a restart)."""
    return time.monotonic() - (datetime.now(timezone.utc) - at).total_seconds()


def recording_path(settings: Settings, uid: str, at: datetime | None = None) -> Path:
    """``recordings_dir/YYYY/MM/DD/<calls.uid>.wav``, dated in the service team's time zone."""
    local = (at or datetime.now(timezone.utc)).astimezone(ZoneInfo(settings.general.timezone))
    return settings.recordings_dir / f"{local:%Y}" / f"{local:%m}" / f"{local:%d}" / f"{uid}.wav"
