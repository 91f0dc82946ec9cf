"""A supervisor on a live call: listen (监听), whisper to the agent (耳语) or barge in (强插).

The supervisor's softphone is rung (caller ID: the customer's number) and joins the call through
the media engine, which gives each leg its own mix: listening, the supervisor hears customer and
agent and nobody hears them; whispering, the agent hears them too; barging in, everyone does.
Joining, each change of mode and leaving are reported (``report``), so each is an event on the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from models.call import SupervisionMode
from telephony import sip
from telephony.media import MediaEngine, MediaLeg

log = logging.getLogger(__name__)


Mode = SupervisionMode  # listen, whisper, barge: as the call log keeps them

# Told (extension, mode) when the supervisor joins or changes mode, (extension, None) when they leave.
Report = Callable[[str, Mode | None], None]


def _no_report(_extension: str, _mode: Mode | None) -> None:
    return None


class Supervision:
    """One supervisor's leg on one call, from the INVITE to their BYE (or the call's end)."""

    def __init__(self, endpoint: sip.Endpoint, engine: MediaEngine, extension: str, mode: Mode,
                 report: Report = _no_report) -> None:
        self.endpoint = endpoint
        self.engine = engine
        self.extension = extension
        self.mode = mode
        self.report = report
        self.leg: MediaLeg = engine.open_leg()
        self.dialog: sip.Dialog | None = None
        self._joined = False

    def ring(self, caller_id: str, timeout: float) -> None:
        """Ring the supervisor's phone; the call goes on meanwhile (``join`` once it answers)."""
        self.dialog = self.endpoint.dial(self.extension, self.leg.local_port, caller_id=caller_id, timeout=timeout)

    @property
    def ended(self) -> bool:
        return self.dialog is None or self.dialog.ended.is_set()

    def join_once_answered(self, customer: MediaLeg, agent: MediaLeg) -> None:
        """When the supervisor's phone has answered: connect their media and mix for the mode, once."""
        dialog = self.dialog
        if self._joined or dialog is None or not dialog.answered.is_set():
            return
        assert dialog.remote_media is not None and dialog.codec is not None
        self.leg.connect((dialog.remote_media.address, dialog.remote_media.port), dialog.codec.payload_type,
                         dialog.codec.dtmf_payload_type)
        self._joined = True
        self._mix(customer, agent)
        self.report(self.extension, self.mode)

    def change(self, mode: Mode, customer: MediaLeg, agent: MediaLeg) -> None:
        """Another mode on the same leg; before the answer, it is the mode they join in."""
        changed, self.mode = mode is not self.mode, mode
        if self._joined:
            self._mix(customer, agent)
            if changed:
                self.report(self.extension, mode)

    def _mix(self, customer: MediaLeg, agent: MediaLeg) -> None:
        """Who hears whom: the supervisor hears both; the agent hears them whispering; everyone, barging in."""
        engine, supervisor = self.engine, self.leg
        engine.set_hears(supervisor, [customer, agent])
        engine.set_hears(agent, [customer] + ([supervisor] if self.mode in (Mode.WHISPER, Mode.BARGE) else []))
        engine.set_hears(customer, [agent] + ([supervisor] if self.mode is Mode.BARGE else []))

    def leave(self, customer: MediaLeg, agent: MediaLeg) -> None:
        """Hang up the supervisor's leg and give customer and agent back to each other."""
        if self.dialog is not None:
            self.dialog.hangup()
        self.engine.unbridge(self.leg)
        if not (customer.closed or agent.closed):
            self.engine.bridge(customer, agent)
        self.leg.close()
        if self._joined:
            self._joined = False
            self.report(self.extension, None)
