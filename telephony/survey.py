"""The automatic survey (回访) on an answered callback: keys for the satisfaction, a spoken answer, thanks.

The script is the service manual's: "您对本次处理结果是否满意？非常满意请按1，满意请按2，一般请按3，
不满意请按4", then "您认为服务过程中需要改进的地方是？". A key counts during the question or after it
(RFC 2833 or SIP INFO); no key or a wrong one repeats the question up to ``callbacks.survey_repeats``
times. The spoken answer runs until ``#``, ``callbacks.answer_silence_seconds`` of silence after the
customer spoke, or ``callbacks.answer_max_seconds``; it is part of the call's recording (its span
kept with the answers) and is transcribed with it. Then thanks, and Hotline hangs up.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from config import Settings
from models.callback import AttemptOutcome
from models.callbacks import KEYS
from telephony.call_media import WATCH_INTERVAL
from telephony.outbound import OutboundCall
from telephony.prompts import PromptLibrary

log = logging.getLogger(__name__)

# RMS of a 20 ms frame (16-bit) above which the customer is taken to be speaking: speech on a
# phone line is in the thousands, a quiet line and comfort noise far under this.
VOICE_RMS = 400.0
END_KEY = "#"


class Voice:
    """When the far end last spoke, from each frame heard (called on the media thread)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None

    def hear(self, frame: bytes) -> None:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        if samples.size and float(np.sqrt(np.mean(samples * samples))) > VOICE_RMS:
            now = time.monotonic()
            if self.first is None:
                self.first = now
            self.last = now


@dataclass
class SurveyResult:
    outcome: AttemptOutcome
    key: str | None = None
    answer: dict[str, float] | None = None  # the spoken answer's span in the recording: {"from_s", "to_s"}
    machine: bool = False  # no speech in the first seconds (answering-machine hint)
    keys: list[str] = field(default_factory=list)  # every key pressed, in order


class Survey:
    """One survey conversation on ``call``, which must be answered; hangs up at its end."""

    def __init__(self, settings: Settings, prompts: PromptLibrary, call: OutboundCall, stop: threading.Event) -> None:
        self.rules = settings.callbacks
        self.company = settings.general.company_name
        self.prompts = prompts
        self.call = call
        self.stop = stop
        self.keys: queue.Queue[str] = queue.Queue()
        self.voice = Voice()
        self.pressed: list[str] = []
        self.answered_at = time.monotonic()

    def run(self) -> SurveyResult:
        leg, dialog = self.call.leg, self.call.dialog
        leg.on_frame = self.voice.hear
        leg.on_dtmf = dialog.on_dtmf = self._pressed
        try:
            return self._converse()
        finally:
            leg.on_frame = None
            leg.on_dtmf = dialog.on_dtmf = None

    def _pressed(self, key: str) -> None:
        self.pressed.append(key)
        self.keys.put(key)

    def _converse(self) -> SurveyResult:
        self._play(self.rules.survey_intro.format(company=self.company))
        key = self._satisfaction()
        machine = self._machine_hint()
        if key is None:
            if self._gone:
                return SurveyResult(AttemptOutcome.HUNG_UP, machine=machine, keys=self.pressed)
            self._close()
            outcome = AttemptOutcome.ANSWERING_MACHINE if machine else AttemptOutcome.NO_INPUT
            return SurveyResult(outcome, machine=machine, keys=self.pressed)
        answer = None if self._gone else self._spoken_answer()
        if not self._gone:
            self._close()
        return SurveyResult(AttemptOutcome.COMPLETED, key=key, answer=answer, machine=machine, keys=self.pressed)

    @property
    def _gone(self) -> bool:
        return self.call.dialog.ended.is_set() or self.stop.is_set()

    def _machine_hint(self) -> bool:
        first = self.voice.first
        return first is None or first - self.answered_at > self.rules.machine_seconds

    def _satisfaction(self) -> str | None:
        """The question, then a key 1-4; asked again after no key or a wrong one."""
        for round_ in range(1 + self.rules.survey_repeats):
            text = self.rules.survey_question
            if round_:  # a key pressed before the question is asked again is not its answer
                text = self.rules.survey_invalid + text
                self._drain()
            key = self._ask(text)
            if key in KEYS:
                log.info("call %s: satisfaction key %s", self.call.uid, key)
                return key
            if self._gone:
                return None
            log.info("call %s: %s", self.call.uid, f"key {key!r} is no option" if key else "no key")
        return None

    def _ask(self, text: str) -> str | None:
        """Say ``text``; the first key during it (which stops it) or within ``survey_key_seconds`` after."""
        leg = self.call.leg
        leg.play(self.prompts.render_text(text))
        deadline = None
        while not self._gone:
            try:
                key = self.keys.get(timeout=WATCH_INTERVAL)
            except queue.Empty:
                if deadline is None and not leg.playing:
                    deadline = time.monotonic() + self.rules.survey_key_seconds
                if deadline is not None and time.monotonic() > deadline:
                    return None
                continue
            leg.stop_playback()
            return key
        return None

    def _spoken_answer(self) -> dict[str, float] | None:
        """The open question; the answer's span, from after the question to its end (#, silence, time)."""
        self._play(self.rules.survey_open_question)
        if self._gone:
            return None
        self._drain()
        start = time.monotonic()
        while not self._gone:
            now = time.monotonic()
            last = self.voice.last if self.voice.last is not None and self.voice.last > start else None
            quiet_since = last if last is not None else start
            # Time to begin is twice the silence that ends an answer.
            limit = self.rules.answer_silence_seconds * (1 if last is not None else 2)
            if now - start > self.rules.answer_max_seconds or now - quiet_since > limit:
                break
            try:
                if self.keys.get(timeout=WATCH_INTERVAL) == END_KEY:
                    break
            except queue.Empty:
                pass
        end = time.monotonic()
        return {"from_s": round(start - self.answered_at, 2), "to_s": round(end - self.answered_at, 2)}

    def _play(self, text: str) -> None:
        leg = self.call.leg
        leg.play(self.prompts.render_text(text))
        while leg.playing and not self._gone:
            leg.wait_played(WATCH_INTERVAL)

    def _close(self) -> None:
        self.call.media.close_with(self.prompts.render_text(self.rules.survey_thanks), self.call.dialog)

    def _drain(self) -> None:
        while not self.keys.empty():
            self.keys.get_nowait()
