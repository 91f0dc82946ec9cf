"""Prompts as 8 kHz 16-bit mono PCM, ready for ``MediaLeg.play``.

From an audio file of any format (``telephony.audio.decode``: pydub), or from text through the
offline TTS command of ``settings.prompts.tts_command`` (espeak-ng's Mandarin voice by
default). The command is split like a shell would, but run without one: ``{out}`` and
``{text}`` are replaced inside the arguments, so text can never become a command.
Rendered text is cached under ``HOTLINE_HOME/prompts`` by a hash of command and text.

A configured file that cannot be read is logged as an error naming its setting, and the
prompt's text is spoken instead: a caller is greeted whatever happened to the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import tempfile
import wave
from collections.abc import Callable
from pathlib import Path

from config import Settings
from telephony.audio import AudioError, decode, write_wav

log = logging.getLogger(__name__)

TTS_TIMEOUT = 60.0


class PromptError(Exception):
    """A prompt could not be made; the message names the file or the command."""


def tts_arguments(command: str, text: str, out: Path) -> list[str]:
    """The TTS command line as a list, placeholders filled in per argument (never through a shell)."""
    arguments = shlex.split(command)
    if not any("{out}" in argument for argument in arguments):
        raise PromptError(f"TTS command {command!r} has no {{out}} placeholder")
    return [argument.replace("{out}", str(out)).replace("{text}", text) for argument in arguments]


def render_text(text: str, command: str, cache_dir: Path) -> bytes:
    """Speech for ``text`` from the TTS command, cached as an 8 kHz WAV in ``cache_dir``."""
    key = hashlib.sha256(f"{command}\0{text}".encode()).hexdigest()[:32]
    cached = cache_dir / f"{key}.wav"
    if cached.is_file():
        return read_cached(cached)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        spoken = Path(work) / "tts.wav"
        run_tts(tts_arguments(command, text, spoken), command)
        if not spoken.is_file():  # espeak-ng exits 0 on an unknown option
            raise PromptError(f"TTS command {command!r} wrote no audio file")
        try:
            pcm = decode(spoken, name=f"the audio of TTS command {command!r}")
        except AudioError as exc:
            raise PromptError(str(exc)) from None
        partial = Path(work) / "prompt.wav"
        write_wav(partial, pcm)
        os.replace(partial, cached)  # whole files only: another process may render the same prompt
    return pcm


def run_tts(arguments: list[str], command: str) -> None:
    try:
        done = subprocess.run(arguments, capture_output=True, timeout=TTS_TIMEOUT)
    except FileNotFoundError:
        raise PromptError(f"TTS command {command!r}: {arguments[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise PromptError(f"TTS command {command!r} took more than {TTS_TIMEOUT:g} s") from None
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip()
        raise PromptError(f"TTS command {command!r} failed with exit code {done.returncode}: {detail}")


def read_cached(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


class PromptLibrary:
    """The call flow's prompts, from the settings; each is made once per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache_dir = settings.home / "prompts"
        self._made: dict[tuple[str, str], bytes] = {}

    def greeting(self) -> bytes:
        prompts = self.settings.prompts
        text = prompts.greeting.replace("{company}", self.settings.general.company_name)
        return self._file_or_text("greeting_file", text)

    def recording_notice(self) -> bytes:
        return self.render_text(self.settings.prompts.recording_notice)

    def closing(self) -> bytes:
        return self._file_or_text("closing_file", self.settings.prompts.closing)

    def render_text(self, text: str) -> bytes:
        return self._made_once(("text", text), lambda: render_text(text, self.settings.prompts.tts_command, self.cache_dir))

    def _file_or_text(self, setting: str, text: str) -> bytes:
        """The file of ``prompts.<setting>`` if one is set and readable, else ``text`` spoken."""
        path = getattr(self.settings.prompts, setting)
        if not path:
            return self.render_text(text)
        return self._made_once(("file", path), lambda: self._file_else_text(setting, path, text))

    def _file_else_text(self, setting: str, path: str, text: str) -> bytes:
        try:
            return decode(path)
        except AudioError as exc:
            log.error("prompts.%s: %s; the text is spoken instead", setting, exc)
            return self.render_text(text)

    def _made_once(self, key: tuple[str, str], make: Callable[[], bytes]) -> bytes:
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]
