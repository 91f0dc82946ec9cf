"""Transcripts of recordings: per-channel segments with word timings."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, str_enum, utcnow

if TYPE_CHECKING:
    from models.recording import Recording


class TranscriptState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Channel(str, Enum):
    CUSTOMER = "customer"  # left channel of the recording
    AGENT = "agent"  # right channel: the agent, or Hotline's prompts


class Transcript(Base):
    __tablename__ = "transcripts"

    id: Mapped[int] = mapped_column(primary_key=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), index=True)
    model: Mapped[str] = mapped_column(String(1024), default="")
    language: Mapped[str] = mapped_column(String(16), default="")
    state: Mapped[TranscriptState] = mapped_column(str_enum(TranscriptState), default=TranscriptState.PENDING)
    live: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    recording: Mapped[Recording] = relationship(back_populates="transcripts")
    segments: Mapped[list[TranscriptSegment]] = relationship(
        back_populates="transcript", cascade="all, delete-orphan", order_by="TranscriptSegment.start"
    )


class TranscriptSegment(Base):
    __tablename__ = "transcript_segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    transcript_id: Mapped[int] = mapped_column(ForeignKey("transcripts.id"), index=True)
    channel: Mapped[Channel] = mapped_column(str_enum(Channel))
    start: Mapped[float]
    end: Mapped[float]
    text: Mapped[str] = mapped_column(Text, default="")
    # [{"word": …, "start": s, "end": s, "conf": 0..1}, …]
    words: Mapped[list[Any]] = mapped_column(default=list)

    transcript: Mapped[Transcript] = relationship(back_populates="segments")
