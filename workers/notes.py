"""Turning a call's transcript into the ticket note: a summary line, then the dialogue.

    通话转写 · 时长 3:25 · 客户 62% / 坐席 38% · 关键词: 投诉×2, 退货 · 型号: X200
    [00:03] 客户: 我 要 投诉
    [00:07] 坐席: 您好 请 讲

The keywords are the words the manuals act on: a complaint (投诉建议) has its own deadline and
revisit, 不满意 sends the case to the supervisor, 退货/换货 open a return; a product model
number ties the call to the customer's product.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from config.defaults import Transcription

# The flagged words are a setting (transcription.keywords); these are its defaults.
DEFAULT_KEYWORDS: tuple[str, ...] = tuple(Transcription().keywords)
# Product model numbers as printed on products and orders: letters and digits, e.g. X200, KFR-35GW.
MODEL_NUMBER = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{1,5}-?\d{2,6}[A-Za-z]{0,3}(?![A-Za-z0-9])")
SPEAKERS = {"customer": "客户", "agent": "坐席"}


class SegmentLike(Protocol):
    """A segment as produced by ``workers.speech`` or stored as ``TranscriptSegment``."""

    start: float
    end: float
    text: str

    @property
    def channel(self) -> Any: ...


@dataclass(frozen=True)
class Summary:
    duration: float
    talk_share: dict[str, float]  # channel → fraction of all speech time
    keywords: dict[str, int]
    model_numbers: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"duration": self.duration, "talk_share": self.talk_share, "keywords": self.keywords,
                "model_numbers": self.model_numbers}


def channel_name(segment: SegmentLike) -> str:
    return getattr(segment.channel, "value", segment.channel)


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def joined(text: str) -> str:
    """Text without the spaces a Chinese model puts between words, so 投 诉 matches 投诉."""
    return re.sub(r"(?<=[^\x00-\x7f])\s+|\s+(?=[^\x00-\x7f])", "", text)


def summarize(segments: Sequence[SegmentLike], duration: float,
              keywords: Sequence[str] = DEFAULT_KEYWORDS) -> Summary:
    """Length, share of talk time per side, flagged keywords and model numbers."""
    talk: Counter[str] = Counter()
    for segment in segments:
        talk[channel_name(segment)] += max(segment.end - segment.start, 0.0)
    total = sum(talk.values())
    share = {name: round(talk[name] / total, 3) if total else 0.0 for name in SPEAKERS}
    text = " ".join(joined(s.text) for s in segments)
    found = {word: text.count(word) for word in keywords if word in text}
    numbers = list(dict.fromkeys(m.upper() for m in MODEL_NUMBER.findall(text)))
    return Summary(round(duration, 1), share, found, numbers)


def summary_line(summary: Summary) -> str:
    parts = [f"通话转写 · 时长 {clock(summary.duration)}",
             " / ".join(f"{SPEAKERS[name]} {share:.0%}" for name, share in summary.talk_share.items())]
    if summary.keywords:
        parts.append("关键词: " + ", ".join(w if n == 1 else f"{w}×{n}" for w, n in summary.keywords.items()))
    if summary.model_numbers:
        parts.append("型号: " + ", ".join(summary.model_numbers))
    return " · ".join(parts)


def dialogue(segments: Iterable[SegmentLike]) -> list[str]:
    """One line per segment, in order of start: ``[mm:ss] 客户: …``."""
    ordered = sorted(segments, key=lambda s: (s.start, channel_name(s)))
    return [f"[{clock(s.start)}] {SPEAKERS[channel_name(s)]}: {joined(s.text)}" for s in ordered]


def transcript_note(segments: Sequence[SegmentLike], duration: float,
                    keywords: Sequence[str] = DEFAULT_KEYWORDS) -> tuple[str, Summary]:
    """The note's text and its summary (kept as the note's data for reports and filters)."""
    summary = summarize(segments, duration, keywords)
    lines = dialogue(segments) or ["(未识别到语音)"]
    return "\n".join([summary_line(summary), *lines]), summary


def failure_note(reason: str, recording_path: str, call_id: int) -> str:
    """What the ticket says when a call could not be transcribed; the recording is kept."""
    return (f"通话转写失败: {reason}。录音已保存 ({recording_path})，"
            f"可稍后重新转写: hotline transcribe --call {call_id}")
