"""Prompts and hold music as 8 kHz 16-bit mono PCM, ready for ``MediaLeg.play`` and ``MediaLeg.loop``.

From an audio file of any format (``telephony.audio.decode``: pydub), or from text through the
offline TTS command of ``settings.prompts.tts_command`` (espeak-ng's Mandarin voice by
default). The command is split like a shell would, but run without one: ``{out}`` and
``{text}`` are replaced inside the arguments, so text can never become a command.
Rendered text is cached under ``HOTLINE_HOME/prompts`` by a hash of command and text, and the
last ``CACHE_SIZE`` prompts in memory: a busy queue repeats the same few announcements.

A configured file that cannot be read is logged as an error naming its setting, and the
prompt's text is spoken instead: a caller is greeted whatever happened to the file. Hold music
falls back the same way to the tune that ships in ``telephony/sounds`` (rebuilt by its
``make_hold_music.py``): a waiting caller never hears silence.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import tempfile
import threading
import wave
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from config import Settings
from telephony.audio import AudioError, decode, write_wav

log = logging.getLogger(__name__)

TTS_TIMEOUT = 60.0
CACHE_SIZE = 256
SHIPPED_HOLD_MUSIC = Path(__file__).with_name("sounds") / "hold_music.ogg"


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
    """The call flows' prompts, from the settings; each is made once per process (the last ``CACHE_SIZE``).

    One library serves every call's thread; synthesis runs on the thread asking, outside the lock.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache_dir = settings.home / "prompts"
        self._made: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def greeting(self) -> bytes:
        prompts = self.settings.prompts
        text = prompts.greeting.replace("{company}", self.settings.general.company_name)
        return self._file_or_text("greeting_file", text)

    def recording_notice(self) -> bytes:
        return self.render_text(self.settings.prompts.recording_notice)

    def closing(self) -> bytes:
        return self._file_or_text("closing_file", self.settings.prompts.closing)

    def hold_music(self) -> bytes:
        """The music of ``queues.hold_music_file``, or the shipped tune if it is empty or unreadable."""
        path = self.settings.queues.hold_music_file or str(SHIPPED_HOLD_MUSIC)
        return self._made_once(("music", path), lambda: self._music_else_shipped(path))

    def position(self, ahead: int, minutes: int) -> bytes:
        """"您前面还有2位客户，预计等待约3分钟" (``queues.position_prompt``); next in line: ``queues.next_prompt``."""
        queues = self.settings.queues
        if ahead == 0:
            return self.render_text(queues.next_prompt)
        return self.render_text(queues.position_prompt.replace("{ahead}", str(ahead))
                                .replace("{minutes}", str(minutes)))

    def menu(self, choices: list[tuple[str, str]]) -> bytes:
        """"技术咨询请按1，售后服务请按2。" from (display name, key) pairs, in the order given."""
        queues = self.settings.queues
        spoken = "，".join(queues.menu_choice.replace("{name}", name).replace("{key}", key) for name, key in choices)
        return self.render_text(queues.menu_prompt.replace("{choices}", spoken))

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

    def _music_else_shipped(self, path: str) -> bytes:
        if path != str(SHIPPED_HOLD_MUSIC):
            try:
                return decode(path)
            except AudioError as exc:
                log.error("queues.hold_music_file: %s; the hold music that ships with Hotline plays instead", exc)
        try:
            return decode(SHIPPED_HOLD_MUSIC)
        except AudioError as exc:  # ffmpeg gone, or the installation damaged
            raise PromptError(str(exc)) from None

    def _made_once(self, key: tuple[str, str], make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._made:
                self._made.move_to_end(key)
                return self._made[key]
        made = make()  # unlocked: one call's TTS never holds up another call's prompt
        with self._lock:
            self._made[key] = made
            if len(self._made) > CACHE_SIZE:
                self._made.popitem(last=False)
        return made
