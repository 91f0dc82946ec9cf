"""Hotline's SIP stack: signalling over UDP, registration at the PBX, dialogs, our own SDP.

One concern per module, in the order a call meets them:

- ``message``: parse/encode, header helpers, status reasons (pyVoIP's table: the one thing taken
  from pyVoIP, whose call handling is replaced — see docs/architecture.md for the measured defects);
- ``sdp``: offer/answer for one G.711 stream, hold directions;
- ``timers``, ``transaction``: RFC 3261 retransmissions, Timer B/F;
- ``dialog``: a call leg's dialog and its states;
- ``registration``: accounts, digest, refresh, keep-alive;
- ``uas``/``uac``: answering and dialling;
- ``endpoint``: the UDP port, dispatch, who may call us, how many at once.

Media never passes through this package: an SDP points at a port of the media engine.
"""

from telephony.sip.dialog import Dialog, DialogState, EndReason
from telephony.sip.endpoint import Endpoint
from telephony.sip.message import Message, SipParseError, parse, reason
from telephony.sip.registration import Account
from telephony.sip.sdp import Codec, Direction, MediaOffer, SdpError, build_sdp, choose_codec, parse_sdp

__all__ = [
    "Account", "Codec", "Dialog", "DialogState", "Direction", "EndReason", "Endpoint", "MediaOffer", "Message",
    "SdpError", "SipParseError", "build_sdp", "choose_codec", "parse", "parse_sdp", "reason",
]
