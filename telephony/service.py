"""``hotline sip``: the SIP side of Hotline in one process — PBX, media engine, endpoint, call flows.

Every hotline number registers at the PBX (the local Kamailio unless ``sip.pbx_host`` is set).
An INVITE gets a thread of its own running the inbound flow (``telephony/inbound.py``); calls we
place run the outbound flow (``telephony/outbound.py``). The call log is written by
``CallEvents`` from its journal, so a database outage never costs a call; at start-up it first
replays what a previous process left and repairs recordings a killed process left open.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time

from config import Settings
from models.alarm import AlarmKind
from telephony import sip
from telephony.call_events import CallEvents
from telephony.dialler import Dialler
from telephony.distributor import Distributor
from telephony.inbound import InboundFlow
from telephony.media import MediaEngine
from telephony.outbound import OutboundCall, OutboundFlow
from telephony.pbx import LocalPbx, hotline_extensions, user_extensions
from telephony.prompts import PromptLibrary
from telephony.virtual_hold import VirtualHold
from workers import bus
from workers.dialler import DiallerService

log = logging.getLogger(__name__)

USERS_POLL_SECONDS = 10.0
STOP_TIMEOUT = 20.0


class HotlineService:
    """The SIP side of Hotline in one process: PBX (optional), endpoint, media engine, call flows."""

    def __init__(self, settings: Settings, *, prompts: PromptLibrary | None = None) -> None:
        self.settings = settings
        sip_settings = settings.sip
        self.pbx = LocalPbx.from_settings(settings) if settings.uses_local_pbx else None
        self.media = MediaEngine(sip_settings.local_ip, sip_settings.rtp_port_min, sip_settings.rtp_port_max)
        self.events = CallEvents(settings)
        self.endpoint = sip.Endpoint(
            local_ip=sip_settings.local_ip, local_port=sip_settings.local_port,
            pbx_host=sip_settings.pbx_host or "127.0.0.1", pbx_port=sip_settings.pbx_port,
            expires=sip_settings.register_expires, on_invite=self._on_invite,
            on_registration=self._on_registration, trusted=sip_settings.trusted_sources,
            max_calls=sip_settings.max_calls,
        )
        for number in sip_settings.hotline_numbers:
            self.endpoint.add_account(number, sip_settings.hotline_password)
        self._prompts = prompts
        self.distributor = Distributor(settings)
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self.outbound = OutboundFlow(settings, self.endpoint, self.media, self.events)
        self.dialler = Dialler(settings, self.endpoint, self.media, self.outbound, self.distributor, self.prompts,
                               self._stopping)
        self.dialler_jobs = DiallerService(settings, self.dialler.take)
        self.virtual_hold = VirtualHold(settings, self.distributor, self.dialler, self._stopping)
        self.inbound = InboundFlow(settings, self.endpoint, self.media, self.events, self.distributor, self.prompts,
                                   self.virtual_hold)
        self._registration_alarmed: set[str] = set()

    def prompts(self) -> PromptLibrary:
        """Loaded on first use: TTS runs only when a call needs a prompt."""
        if self._prompts is None:
            self._prompts = PromptLibrary(self.settings)
        return self._prompts

    # lifecycle

    def start(self, *, register_timeout: float = 5.0) -> bool:
        """Replay and repair, start PBX, media and endpoint; True when every number registered in time.

        Not registering in time is logged, not fatal: registration keeps retrying.
        """
        bus.install(self.settings)
        self.events.start()
        self.events.repair_unfinished()
        if self.pbx is not None:
            self.pbx.start(self._extensions())
            threading.Thread(target=self._watch_users, name="pbx-users", daemon=True).start()
        self.media.start()
        self.endpoint.start()
        self.distributor.start()
        self.dialler_jobs.start()
        threading.Thread(target=self.virtual_hold.restore, name="virtual-hold-restore", daemon=True).start()
        threading.Thread(target=self._take_call_requests, name="call-requests", daemon=True).start()
        registered = self.endpoint.wait_registered(register_timeout)
        if not registered:
            log.warning("not registered after %.0f s; retrying in the background", register_timeout)
        return registered

    def stop(self) -> None:
        """Close every call from our side (closing prompt, BYE), then stop everything."""
        self._stopping.set()
        self.dialler_jobs.stop()
        for thread in [*self._threads, *self.dialler.running]:
            thread.join(STOP_TIMEOUT)
        self.endpoint.stop()  # hangs up the calls we placed too; their threads report how they ended
        for call in list(self.outbound.active):
            call.wait_done(STOP_TIMEOUT)
        self.distributor.stop()
        self.media.stop()
        self.events.stop()
        if self.pbx is not None:
            self.pbx.stop()

    def run_forever(self) -> None:
        """Until SIGTERM or Ctrl-C."""
        done = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: done.set())
        try:
            self.start()
            # Everything loaded so far lives as long as the process: keep it out of the garbage
            # collector's full passes, which stop every thread (the media clock included).
            gc.freeze()
            log.info("hotline sip: numbers %s on %s:%s", ", ".join(self.settings.sip.hotline_numbers),
                     self.settings.sip.local_ip, self.settings.sip.local_port)
            done.wait()
        finally:
            self.stop()

    def dial(self, number: str, **options: object) -> OutboundCall:
        """Place a call (see ``OutboundFlow.dial``)."""
        return self.outbound.dial(number, **options)  # type: ignore[arg-type]

    # the PBX

    def _extensions(self) -> list[tuple[str, str]]:
        return hotline_extensions(self.settings) + user_extensions(self.settings)

    def _watch_users(self) -> None:
        """Restart the local PBX when users' extensions or passwords change; log out agents whose phone is gone."""
        missing_since: dict[str, float] = {}
        while not self._stopping.wait(USERS_POLL_SECONDS):
            try:
                if self.pbx is not None and self.pbx.reload(self._extensions()):
                    log.info("local PBX restarted with new extensions")
                    missing_since.clear()  # every phone registers anew: give each its grace again
                self._log_out_unregistered(missing_since)
            except Exception:
                log.exception("watching the local PBX failed")

    def _log_out_unregistered(self, missing_since: dict[str, float]) -> None:
        """Extensions unregistered for ``queues.unregistered_grace`` s: their agents are logged out."""
        registered = self.pbx.registered() if self.pbx is not None else None
        if registered is None:
            return
        now = time.monotonic()
        extensions = {extension for extension, _ in user_extensions(self.settings)}
        for extension in list(missing_since):
            if extension in registered or extension not in extensions:
                del missing_since[extension]
        for extension in extensions - registered:
            missing_since.setdefault(extension, now)
        gone = {ext for ext, since in missing_since.items() if now - since >= self.settings.queues.unregistered_grace}
        if gone:
            self.distributor.log_out_unregistered(gone)

    def _on_registration(self, account: sip.Account) -> None:
        if account.registered:
            self._registration_alarmed.discard(account.user)
            return
        if account.user in self._registration_alarmed:
            return  # one alarm per outage, not one per retry
        self._registration_alarmed.add(account.user)
        message = f"hotline number {account.user} cannot register at the PBX: {account.last_error}"
        log.error("%s", message)
        self.events.alarm(None, AlarmKind.REGISTRATION_FAILED, message)

    # calls

    def _take_call_requests(self) -> None:
        """Requests of the web UI for calls this process runs (the desk's hold and transfer buttons)."""
        for request in bus.call_requests(self.settings):
            if self._stopping.is_set():
                return
            if not isinstance(request, dict):
                continue
            call = self.inbound.queued.get(str(request.get("uid")))
            if call is not None:
                call.request(str(request.get("action")), str(request.get("target") or ""))

    def _on_invite(self, dialog: sip.Dialog) -> None:
        """Runs on the SIP thread: hand the call to a thread of its own."""
        if self._stopping.is_set():
            dialog.reject(503)
            return
        thread = threading.Thread(target=self._run_inbound, args=(dialog,), name=f"call-{dialog.call_id[:8]}",
                                  daemon=True)
        self._threads.add(thread)
        thread.start()

    def _run_inbound(self, dialog: sip.Dialog) -> None:
        try:
            self.inbound.run(dialog, self._stopping)
        finally:
            self._threads.discard(threading.current_thread())
