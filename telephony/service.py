"""``hotline sip``: the inbound call flow — ring → answer → greet → record → log → ticket.

Every hotline number registers at the PBX (the local Kamailio unless ``sip.pbx_host`` is set).
An inbound call is logged while it rings, answered after ``sip.answer_delay`` (within the
rings the phone manual allows), greeted with the greeting and the recording notice, and
recorded from the answer to the hang-up as a stereo WAV (left the customer, right what Hotline
or an agent says). Until queues and agents exist the caller then waits, queued, hearing the
media engine's audio, until they hang up; ``ActiveCall.leg`` is where an agent leg will be
bridged. At the end the recording is sealed (SHA-256) and the call linked to a ticket.

A recording that cannot be written raises an alarm: a call never goes unrecorded silently.
Recordings left open by a killed process are repaired at start-up.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo


from config import Settings
from models.alarm import AlarmKind
from models.call import Call, CallOutcome, CallState, HangupParty
from models.calllog import (
    close_recording, log_inbound, mark_answered, mark_ended, mark_state, open_recording, raise_alarm,
    ticket_for_call, unfinished_recordings,
)
from models.db import session_scope
from models.recording import Recording, RecordingState
from telephony import sip
from telephony.g711 import SAMPLE_RATE
from telephony.media import MediaEngine, MediaLeg
from telephony.pbx import LocalPbx, hotline_extensions, user_extensions
from telephony.recorder import RecordingError, StereoWavRecorder, file_sha256, repair_wav

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.1
CLOSING_TIMEOUT = 15.0
USERS_POLL_SECONDS = 10.0


@dataclass
class ActiveCall:
    """A call in progress: its SIP dialog, its database row, its media leg and its recording."""

    sip_call: sip.Dialog
    call_id: int  # calls.id
    leg: MediaLeg | None = None
    recorder: StereoWavRecorder | None = None
    recording_id: int | None = None
    recording_error: str | None = None
    answered: bool = False
    stop: threading.Event = field(default_factory=threading.Event)  # the service is shutting down


class HotlineService:
    """The SIP side of Hotline in one process: PBX (optional), endpoint, media engine, call flows."""

    def __init__(self, settings: Settings, *, prompts: object | None = None) -> None:
        self.settings = settings
        sip_settings = settings.sip
        self.pbx = LocalPbx.from_settings(settings) if settings.uses_local_pbx else None
        self.media = MediaEngine(sip_settings.local_ip, sip_settings.rtp_port_min, sip_settings.rtp_port_max)
        self.endpoint = sip.Endpoint(
            local_ip=sip_settings.local_ip, local_port=sip_settings.local_port,
            pbx_host=sip_settings.pbx_host or "127.0.0.1", pbx_port=sip_settings.pbx_port,
            expires=sip_settings.register_expires, on_invite=self._on_invite,
            on_registration=self._on_registration,
        )
        for number in sip_settings.hotline_numbers:
            self.endpoint.add_account(number, sip_settings.hotline_password)
        self._prompts = prompts
        self.calls: dict[str, ActiveCall] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._registration_alarmed: set[str] = set()

    @property
    def prompts(self) -> object:
        if self._prompts is None:
            from telephony.prompts import PromptLibrary

            self._prompts = PromptLibrary(self.settings)
        return self._prompts

    # lifecycle

    def start(self, *, register_timeout: float = 5.0) -> bool:
        """Repair, start PBX, media and endpoint; True when every number registered in time.

        Not registering in time is logged, not fatal: registration keeps retrying.
        """
        repair_unfinished(self.settings)
        if self.pbx is not None:
            self.pbx.start(self._extensions())
            threading.Thread(target=self._watch_users, name="pbx-users", daemon=True).start()
        self.media.start()
        self.endpoint.start()
        registered = self.endpoint.wait_registered(register_timeout)
        if not registered:
            log.warning("not registered after %.0f s; retrying in the background", register_timeout)
        return registered

    def stop(self) -> None:
        """Close every call from our side (closing prompt, BYE), then stop everything."""
        self._stopping.set()
        for active in list(self.calls.values()):
            active.stop.set()
        for thread in list(self._threads):
            thread.join(CLOSING_TIMEOUT + 5)
        self.endpoint.stop()
        self.media.stop()
        if self.pbx is not None:
            self.pbx.stop()

    def run_forever(self) -> None:
        """Until SIGTERM or Ctrl-C."""
        done = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: done.set())
        self.start()
        # Everything loaded so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which stop every thread (the media clock included).
        gc.freeze()
        log.info("hotline sip: numbers %s on %s:%s", ", ".join(self.settings.sip.hotline_numbers),
                 self.settings.sip.local_ip, self.settings.sip.local_port)
        done.wait()
        self.stop()

    def _extensions(self) -> list[tuple[str, str]]:
        return hotline_extensions(self.settings) + user_extensions(self.settings)

    def _watch_users(self) -> None:
        """Restart the local PBX when users' extensions or passwords change."""
        while not self._stopping.wait(USERS_POLL_SECONDS):
            try:
                if self.pbx is not None and self.pbx.reload(self._extensions()):
                    log.info("local PBX restarted with new extensions")
            except Exception:
                log.exception("reloading the local PBX failed")

    def _on_registration(self, account: sip.Account) -> None:
        if account.registered:
            self._registration_alarmed.discard(account.user)
            return
        if account.user in self._registration_alarmed:
            return  # one alarm per outage, not one per retry
        self._registration_alarmed.add(account.user)
        message = f"hotline number {account.user} cannot register at the PBX: {account.last_error}"
        threading.Thread(target=self._alarm, args=(AlarmKind.REGISTRATION_FAILED, message), daemon=True).start()

    def _alarm(self, kind: AlarmKind, message: str, call_id: int | None = None) -> None:
        log.error("%s", message)
        try:
            with session_scope(self.settings) as session:
                call = session.get(Call, call_id) if call_id else None
                raise_alarm(session, kind, message, call=call, source="sip")
        except Exception:
            log.exception("could not store the alarm")

    # the call flow

    def _on_invite(self, sip_call: sip.Dialog) -> None:
        """Runs on the SIP thread: hand the call to a thread of its own."""
        if self._stopping.is_set():
            sip_call.reject(503)
            return
        thread = threading.Thread(target=self._flow, args=(sip_call,), name=f"call-{sip_call.call_id[:8]}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _flow(self, sip_call: sip.Dialog) -> None:
        try:
            active = ActiveCall(sip_call, self._log_ringing(sip_call))
        except Exception:
            log.exception("cannot log call %s from %s: refusing it", sip_call.call_id, sip_call.caller)
            sip_call.hangup()
            return
        self.calls[sip_call.call_id] = active
        try:
            outcome, party = self._run_call(active)
        except Exception:
            log.exception("call %s failed", sip_call.call_id)
            sip_call.hangup()
            outcome, party = CallOutcome.FAILED, HangupParty.SYSTEM
        try:
            self._finish(active, outcome, party)
        finally:
            self.calls.pop(sip_call.call_id, None)
            self._threads = [t for t in self._threads if t.is_alive() and t is not threading.current_thread()]

    def _log_ringing(self, sip_call: sip.Dialog) -> int:
        with session_scope(self.settings) as session:
            return log_inbound(session, self.settings, caller=sip_call.caller, callee=sip_call.callee,
                               sip_call_id=sip_call.call_id).id

    def _run_call(self, active: ActiveCall) -> tuple[CallOutcome, HangupParty]:
        sip_call = active.sip_call
        if sip_call.end_reason is sip.EndReason.REJECTED:  # no common codec: the endpoint sent 488
            return CallOutcome.REJECTED, HangupParty.SYSTEM
        # The delay counts from the INVITE, so the time spent logging the call is not added to it.
        delay = self.settings.sip.answer_delay - (time.monotonic() - sip_call.created)
        if sip_call.ended.wait(max(0.0, delay)):
            return CallOutcome.CANCELLED, HangupParty.CUSTOMER
        self._answer(active)
        if sip_call.state is not sip.DialogState.ANSWERED:
            return CallOutcome.CANCELLED, HangupParty.CUSTOMER  # CANCEL crossed our 200 OK
        self._greet(active)
        return self._wait_end(active)

    def _answer(self, active: ActiveCall) -> None:
        """Media and the WAV first, then the 200 OK; the database rows follow the answer."""
        sip_call = active.sip_call
        leg = self.media.open_leg()
        active.leg = leg
        remote, codec = sip_call.remote_media, sip_call.codec
        assert remote is not None and codec is not None
        leg.connect((remote.address, remote.port), codec.payload_type, codec.dtmf_payload_type)
        sip_call.on_media = lambda c: leg.connect((c.remote_media.address, c.remote_media.port),
                                                  codec.payload_type, codec.dtmf_payload_type)
        path = recording_path(self.settings, active.call_id)
        self._start_recording(active, path)
        sip_call.answer(leg.local_port)
        active.answered = True
        with session_scope(self.settings) as session:
            call = session.get(Call, active.call_id)
            mark_answered(session, call)
            recording = open_recording(session, self.settings, call, str(path), sample_rate=SAMPLE_RATE,
                                       channels=2)
            active.recording_id = recording.id

    def _start_recording(self, active: ActiveCall, path: Path) -> None:
        """Open the WAV before the answer, so the recording covers the call from its first frame."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            active.recorder = StereoWavRecorder(path, sample_rate=SAMPLE_RATE)
        except (OSError, RecordingError) as exc:
            self._recording_failed(active, str(exc))  # the call goes on, with an alarm and a FAILED row
            return
        assert active.leg is not None
        active.leg.on_recorder_error = lambda exc: self._recording_failed(active, str(exc))
        active.leg.attach_recorder(active.recorder)

    def _recording_failed(self, active: ActiveCall, error: str) -> None:
        if active.recording_error is not None:
            return
        active.recording_error = error
        message = f"call {active.call_id} ({active.sip_call.caller}) is not being recorded: {error}"
        threading.Thread(target=self._alarm, args=(AlarmKind.RECORDING_FAILED, message, active.call_id),
                         daemon=True).start()

    def _greet(self, active: ActiveCall) -> None:
        assert active.leg is not None
        prompts = self.prompts
        active.leg.play(prompts.greeting() + prompts.recording_notice())  # type: ignore[attr-defined]

    def _wait_end(self, active: ActiveCall) -> tuple[CallOutcome, HangupParty]:
        """Greeting, then queued, until the caller hangs up, the audio stops or we shut down."""
        leg, sip_call = active.leg, active.sip_call
        assert leg is not None
        queued = False
        timeout = self.settings.sip.no_audio_timeout
        while not sip_call.ended.wait(WATCH_INTERVAL):
            if not queued and not leg.playing:
                queued = True
                with session_scope(self.settings) as session:
                    mark_state(session, session.get(Call, active.call_id), CallState.QUEUED)
            if time.monotonic() - leg.last_rx > timeout:
                self._close_from_our_side(active)
                return CallOutcome.NO_AUDIO, HangupParty.SYSTEM
            if active.stop.is_set():
                self._close_from_our_side(active)
                return CallOutcome.FAILED, HangupParty.SYSTEM
        return CallOutcome.ABANDONED, HangupParty.CUSTOMER

    def _close_from_our_side(self, active: ActiveCall) -> None:
        """The closing prompt, then BYE (unless the caller hangs up first)."""
        assert active.leg is not None
        active.leg.stop_playback()
        active.leg.play(self.prompts.closing())  # type: ignore[attr-defined]
        deadline = time.monotonic() + CLOSING_TIMEOUT
        while active.leg.playing and time.monotonic() < deadline and not active.sip_call.ended.is_set():
            active.leg.wait_played(WATCH_INTERVAL)
        time.sleep(0.1)  # the last frames leave the media thread before the BYE
        active.sip_call.hangup()

    def _finish(self, active: ActiveCall, outcome: CallOutcome, party: HangupParty) -> None:
        """Seal the recording, log the end and link the ticket."""
        result = None
        if active.leg is not None:
            active.leg.detach_recorder()
            active.leg.close()
        if active.recorder is not None:
            try:
                result = active.recorder.close()
            except (OSError, RecordingError) as exc:
                self._recording_failed(active, str(exc))
        with session_scope(self.settings) as session:
            call = session.get(Call, active.call_id)
            assert call is not None
            if active.recording_id is not None:
                recording = session.get(Recording, active.recording_id)
                if result is not None:
                    close_recording(session, self.settings, recording, duration=result.duration,
                                    sha256=result.sha256, size_bytes=result.size_bytes,
                                    state=RecordingState.FAILED if active.recording_error else RecordingState.COMPLETE,
                                    error=active.recording_error)
                else:
                    _fail_recording(session, self.settings, recording, active.recording_error or "not closed")
            mark_ended(session, call, outcome=outcome, hangup_by=party)
            if outcome is not CallOutcome.REJECTED:  # a missed call is followed up too
                ticket_for_call(session, self.settings, call)
        log.info("call %s from %s ended: %s (hung up by %s)", active.call_id, active.sip_call.caller,
                 outcome.value, party.value)


def recording_path(settings: Settings, call_id: int, at: datetime | None = None) -> Path:
    """``recordings_dir/YYYY/MM/DD/<calls.id>.wav``, dated in the service team's time zone."""
    local = (at or datetime.now(timezone.utc)).astimezone(ZoneInfo(settings.general.timezone))
    return settings.recordings_dir / f"{local:%Y}" / f"{local:%m}" / f"{local:%d}" / f"{call_id}.wav"


def _fail_recording(session: object, settings: Settings, recording: Recording | None, error: str) -> None:
    if recording is not None:
        close_recording(session, settings, recording, duration=0.0, sha256="", size_bytes=0,  # type: ignore[arg-type]
                        state=RecordingState.FAILED, error=error)


def repair_unfinished(settings: Settings) -> int:
    """Seal recordings (and end calls) a killed process left open; returns how many were found."""
    with session_scope(settings) as session:
        found = unfinished_recordings(session)
        for recording in found:
            path = Path(recording.path)
            try:
                repair_wav(path)
                size = path.stat().st_size
                duration = (size - 44) / (recording.sample_rate * recording.channels * 2)
                close_recording(session, settings, recording, duration=duration, sha256=file_sha256(path),
                                size_bytes=size, state=RecordingState.REPAIRED)
            except (OSError, RecordingError) as exc:
                _fail_recording(session, settings, recording, f"repair failed: {exc}")
                raise_alarm(session, AlarmKind.RECORDING_FAILED, f"recording {path} lost: {exc}",
                            call=recording.call, source="sip")
            call = recording.call
            if call.state is not CallState.ENDED:
                mark_ended(session, call, outcome=CallOutcome.FAILED, hangup_by=HangupParty.SYSTEM)
                if call.ticket_id is None:
                    ticket_for_call(session, settings, call)
        if found:
            log.info("repaired %d unfinished recordings", len(found))
        return len(found)
