"""Audio files in and out, through pydub (which drives ffmpeg, so any format ffmpeg reads).

In: prompt and hold-music files and uploaded audio become the media engine's PCM, 8 kHz 16-bit
signed mono (``decode``). Out: a recording (stereo WAV, customer left, agent right) becomes an
mp3, ogg or flac to download (``export_recording``).

Both load the whole file into memory, which suits prompts and call recordings (a one-hour
recording is 115 MB of PCM); the transcription worker streams from ffmpeg instead.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import wave
from enum import Enum
from pathlib import Path
from typing import IO

from telephony.g711 import SAMPLE_RATE, SAMPLE_WIDTH

with warnings.catch_warnings():
    # pydub imports audioop (deprecated on 3.11/3.12) and has regexes 3.12 warns about: neither
    # concerns us, and a suite run with -W error must still import it.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", SyntaxWarning)
    from pydub import AudioSegment
    from pydub.exceptions import PydubException


class AudioError(Exception):
    """An audio file cannot be read or written; the message names the file and ffmpeg's reason."""


class ExportFormat(str, Enum):
    MP3 = "mp3"
    OGG = "ogg"
    FLAC = "flac"


def decode(source: Path | str | IO[bytes], name: str = "") -> bytes:
    """Any audio file (a path, or an open binary file such as an upload) as 8 kHz 16-bit mono PCM.

    ``name`` is what errors call the input (default: its path).
    """
    name = name or str(source)
    segment = read(source, name).set_channels(1).set_sample_width(SAMPLE_WIDTH)
    if segment.frame_rate != SAMPLE_RATE:
        segment = resampled(segment, name)
    if not segment.raw_data:
        raise AudioError(f"cannot read {name}: no audio in it")
    return segment.raw_data


def read(source: Path | str | IO[bytes], name: str) -> AudioSegment:
    """The file as pydub decoded it; AudioError naming it if it is missing, empty or not audio."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"{name} does not exist")
        if path.stat().st_size == 0:
            raise AudioError(f"cannot read {name}: the file is empty")
        source = str(path)
    try:
        return AudioSegment.from_file(source)
    except FileNotFoundError as exc:  # the file was checked: what is missing is ffmpeg or ffprobe
        raise AudioError(f"cannot read {name}: {exc.filename or 'ffmpeg'} is not installed") from None
    except (PydubException, OSError, LookupError, ValueError) as exc:
        raise AudioError(f"cannot read {name}: {ffmpeg_reason(exc)}") from None


def resampled(segment: AudioSegment, name: str) -> AudioSegment:
    """``segment`` at 8 kHz by ffmpeg's resampler, which filters what 8 kHz cannot carry.

    Not pydub's ``set_frame_rate``: its ``audioop.ratecv`` does not, and a 6 kHz tone (hold music
    has plenty above 4 kHz) came back from it as a 2 kHz tone at full level (measured; ffmpeg: −42 dB).
    """
    try:
        with segment.export(format="wav", parameters=["-ar", str(SAMPLE_RATE)]) as converted:
            return AudioSegment.from_wav(converted)
    except (PydubException, OSError) as exc:
        raise AudioError(f"cannot resample {name}: {ffmpeg_reason(exc)}") from None


def export_recording(recording: Path, destination: Path, fmt: ExportFormat) -> Path:
    """The recording in ``fmt`` at ``destination``, channels and rate as recorded.

    Written beside ``destination`` and renamed into place: a download never gets half a file,
    and a failed export leaves the recording and an earlier export as they were.
    """
    segment = read(recording, str(recording))
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    os.close(handle)
    try:
        segment.export(partial, format=fmt.value).close()
        os.replace(partial, destination)
    except (PydubException, OSError) as exc:
        raise AudioError(f"cannot export {recording} as {fmt.value}: {ffmpeg_reason(exc)}") from None
    finally:
        Path(partial).unlink(missing_ok=True)
    return destination


def ffmpeg_reason(exc: Exception) -> str:
    """The last line ffmpeg wrote (pydub puts its whole output in the message), else the error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def write_wav(path: Path, pcm: bytes) -> None:
    """8 kHz 16-bit mono PCM as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)
