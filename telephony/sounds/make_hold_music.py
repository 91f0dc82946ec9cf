"""Rebuild hold_music.ogg, the hold music that ships with Hotline (``queues.hold_music_file`` empty).

Eight bars of a soft electric-piano arpeggio over a pad and a plucked bass, I–vi–IV–V and
I–iii–IV–V7 in F major at 76 beats a minute (25 s), synthesised at the telephone's 8 kHz: every
partial stays under 3.4 kHz (the telephone band), so nothing aliases, and the bass leaves out
its fundamental, which a phone's earpiece would not play. The loop is seamless by
construction: the buffer is circular, and a note still ringing at the end of bar eight wraps
round into bar one, exactly as it would had the tune simply gone on; the last bar's dominant
resolves into the first bar's tonic.

    python telephony/sounds/make_hold_music.py   # needs numpy and ffmpeg (libvorbis)
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from telephony.audio import write_wav
from telephony.g711 import SAMPLE_RATE

RATE = SAMPLE_RATE
BEAT = 60 / 76
BAR = 4 * BEAT
TOP_HZ = 3400  # telephone band
TARGET_RMS = 2600  # about −22 dBFS: a little under espeak-ng's prompts, which play over it
OUT = Path(__file__).with_name("hold_music.ogg")

# Chords as MIDI notes: the bass root, then the chord tones the arpeggio and the pad use.
PROGRESSION = [
    (41, [65, 69, 72, 76]),  # Fmaj7
    (38, [62, 65, 69, 72]),  # Dm7
    (46, [62, 65, 70, 74]),  # B♭/D
    (48, [64, 67, 72, 76]),  # C/E
    (41, [65, 69, 72, 77]),  # F
    (45, [64, 67, 69, 72]),  # Am7
    (46, [65, 70, 74, 77]),  # B♭/F
    (48, [64, 67, 70, 72]),  # C7, leading back to bar one's F
]
ARPEGGIO = [0, 1, 2, 3, 2, 1, 2, 1]  # chord-tone index per eighth note
LAST_BAR_ARPEGGIO = [0, 1, 2, 3, 3, 2, 1, 0]  # turns back down towards the loop's start


def hz(midi: int) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def note(frequency: float, seconds: float, partials: list[tuple[float, float]], attack: float,
         release: float) -> np.ndarray:
    """A tone of ``seconds`` plus its release: (harmonic, decay time constant) partials, 1/h² loud."""
    t = np.arange(int((seconds + release) * RATE)) / RATE
    tone = np.zeros_like(t)
    for harmonic, decay in partials:
        if frequency * harmonic >= TOP_HZ:
            continue
        tone += np.sin(2 * np.pi * frequency * harmonic * t) * np.exp(-t / decay) / harmonic ** 2
    envelope = np.minimum(1.0, t / attack)  # a few ms of attack: no click at the onset
    ending = t > seconds
    envelope[ending] *= np.cos((t[ending] - seconds) / release * np.pi / 2) ** 2  # then fade to zero
    return tone * envelope


def add(buffer: np.ndarray, start: float, sound: np.ndarray, level: float) -> None:
    """Mix ``sound`` in at ``start`` seconds, wrapping past the end: the buffer is one turn of the loop."""
    indices = (int(round(start * RATE)) + np.arange(len(sound))) % len(buffer)
    np.add.at(buffer, indices, sound * level)


def tune() -> np.ndarray:
    """One turn of the loop, before scaling to ``TARGET_RMS``."""
    buffer = np.zeros(int(round(len(PROGRESSION) * BAR * RATE)))
    piano = [(1, 1.2), (2, 0.5), (3, 0.25), (4, 0.15)]
    bass = [(2, 0.9), (3, 0.5), (4, 0.3), (5, 0.2)]  # no fundamental: under 300 Hz a phone drops it
    for bar, (root, tones) in enumerate(PROGRESSION):
        start = bar * BAR
        for midi in tones[:3]:
            add(buffer, start, note(hz(midi), BAR, [(1, 8.0), (2, 3.0)], attack=0.4, release=0.6), 0.10)
        add(buffer, start, note(hz(root), 2 * BEAT, bass, attack=0.01, release=0.3), 1.6)
        add(buffer, start + 2 * BEAT, note(hz(root), 2 * BEAT, bass, attack=0.01, release=0.3), 1.1)
        pattern = LAST_BAR_ARPEGGIO if bar == len(PROGRESSION) - 1 else ARPEGGIO
        for eighth, index in enumerate(pattern):
            accent = 1.0 if eighth % 2 == 0 else 0.75  # on the beat a little louder
            add(buffer, start + eighth * BEAT / 2, note(hz(tones[index]), BEAT, piano, attack=0.004, release=0.8),
                0.35 * accent)
    return buffer


def main() -> None:
    music = tune()
    music *= TARGET_RMS / np.sqrt((music ** 2).mean())
    pcm = np.clip(np.round(music), -32768, 32767).astype("<i2")
    with tempfile.TemporaryDirectory() as work:
        wav = Path(work) / "hold_music.wav"
        write_wav(wav, pcm.tobytes())
        # bitexact: no encoder tag and a fixed Ogg serial number, so a rebuild gives the same bytes
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "libvorbis", "-q:a", "4",
                        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", str(OUT)], check=True)
    print(f"{OUT}: {len(pcm) / RATE:.1f} s, {OUT.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
