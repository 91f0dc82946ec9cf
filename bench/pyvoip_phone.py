"""Stock pyVoIP 1.6.8 answering and recording every call: the baseline bench/calls.py measures.

    python bench/pyvoip_phone.py --pbx-port 5260 --sip-port 5264 --extension 2000 --password PW \
        --rtp 46000-47999 --recordings DIR

Registers to the PBX (pyVoIP sends every message to it: it cannot work without one), prints
"registered" once it is, and answers each call the simplest correct way pyVoIP allows: in the
callback pyVoIP runs 1 s after the INVITE, ``answer()``, then non-blocking ``read_audio(160)``
on a 20 ms clock until the call ends (a blocking read skips silent frames and so loses time).

The reads run 60 ms behind the caller, as deep as Hotline's jitter buffer: pyVoIP files packets
by timestamp, so a reader that lags gets a packet that came a little late instead of silence
(the one jitter buffer its API allows; reading in step with the caller lost 1–3 frames per 20 s
call at 50 calls). After the hang-up the reader reads what it still owes (the lag, and whatever
a loop slowed down by pyVoIP's threads had not caught up with), so the reader itself loses none
of the audio pyVoIP received. The audio is kept in memory and written at the hang-up as a mono
16-bit 8 kHz WAV named after the Call-ID.

Stops on SIGTERM or SIGINT (exit code 0); exits with code 1 and a message when registration fails.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pyVoIP.VoIP import CallState, InvalidStateError, PhoneStatus, VoIPCall, VoIPPhone

RATE = 8000
FRAME_SAMPLES = 160  # 20 ms: pyVoIP's audio is one unsigned byte per sample
FRAME_SECONDS = FRAME_SAMPLES / RATE
LAG_FRAMES = 3  # telephony/media.py JITTER_FRAMES


def recording_name(call_id: str) -> str:
    """The file name of a call's recording: its Call-ID with anything unsafe in a path replaced."""
    return re.sub(r"[^A-Za-z0-9@._-]", "_", call_id) + ".wav"


def to_linear16(audio: bytes) -> bytes:
    """pyVoIP's unsigned 8-bit samples as signed 16-bit: its silence (0x80) becomes 0."""
    samples = (np.frombuffer(audio, np.uint8).astype(np.int16) - 128) << 8
    return samples.astype("<i2").tobytes()


def record(call: VoIPCall, path: Path) -> None:
    """Read what the caller sends on a 20 ms clock LAG_FRAMES behind until the call ends; then write the WAV."""
    audio = bytearray()  # kept in memory (8 kB/s): converting and writing per frame doubled pyVoIP's CPU
    lag = LAG_FRAMES * FRAME_SECONDS
    tick = time.monotonic() + lag  # when the next frame is read; it holds the audio of ``lag`` earlier
    time.sleep(lag)
    while call.state == CallState.ANSWERED:
        audio += call.read_audio(FRAME_SAMPLES, blocking=False)
        # Absolute deadlines: a late wake-up reads the frames it owes at once, so no time is lost.
        tick += FRAME_SECONDS
        time.sleep(max(0.0, tick - time.monotonic()))
    hung_up = time.monotonic()
    while tick < hung_up + lag:  # the frames of the call not read yet
        audio += call.read_audio(FRAME_SAMPLES, blocking=False)
        tick += FRAME_SECONDS
    partial = path.with_suffix(".part")
    with wave.open(str(partial), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(RATE)
        wav.writeframes(to_linear16(bytes(audio)))
    partial.rename(path)  # complete: the bench looks for this name


def answering(folder: Path) -> Callable[[VoIPCall], None]:
    """pyVoIP's call callback: answer, then record into ``folder``."""

    def answer_and_record(call: VoIPCall) -> None:
        try:
            call.answer()
        except InvalidStateError as exc:  # the caller gave up during pyVoIP's one-second wait
            print(f"{call.call_id}: not answered: {exc}", file=sys.stderr, flush=True)
            return
        record(call, folder / recording_name(call.call_id))

    return answer_and_record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pbx-port", type=int, required=True)
    parser.add_argument("--sip-port", type=int, required=True)
    parser.add_argument("--extension", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--rtp", default="46000-47999", help="RTP port range LOW-HIGH")
    parser.add_argument("--recordings", type=Path, required=True)
    args = parser.parse_args()
    low, _, high = args.rtp.partition("-")
    if not (low.isdigit() and high.isdigit() and int(low) <= int(high)):
        parser.error(f"--rtp {args.rtp!r}: expected LOW-HIGH, e.g. 46000-47999")
    args.recordings.mkdir(parents=True, exist_ok=True)
    phone = VoIPPhone("127.0.0.1", args.pbx_port, args.extension, args.password, myIP="127.0.0.1",
                      callCallback=answering(args.recordings), sipPort=args.sip_port,
                      rtpPortLow=int(low), rtpPortHigh=int(high))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    phone.start()
    if phone.get_status() != PhoneStatus.REGISTERED:
        phone.stop()
        print(f"pyVoIP did not register as {args.extension} at 127.0.0.1:{args.pbx_port} "
              f"(status {phone.get_status().value})", file=sys.stderr)
        return 1
    print("registered", flush=True)
    stopping.wait()
    phone.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
