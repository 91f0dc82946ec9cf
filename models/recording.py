"""Recordings: one stereo WAV per call (left customer, right agent or prompts)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, str_enum, utcnow

if TYPE_CHECKING:
    from models.call import Call
    from models.transcript import Transcript


class RecordingState(str, Enum):
    RECORDING = "recording"
    COMPLETE = "complete"
    REPAIRED = "repaired"  # the process died mid-call; the header was fixed at start-up
    FAILED = "failed"


class Recording(Base):
    __tablename__ = "recordings"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    path: Mapped[str] = mapped_column(String(1024))
    format: Mapped[str] = mapped_column(String(16), default="wav")
    sample_rate: Mapped[int] = mapped_column(default=8000)
    channels: Mapped[int] = mapped_column(default=2)
    duration: Mapped[float | None]
    size_bytes: Mapped[int | None]
    sha256: Mapped[str | None] = mapped_column(String(64))
    # Time the media clock lost and the recorder wrote as silence: all of it, and the longest gap.
    gap_seconds: Mapped[float] = mapped_column(default=0.0, server_default="0")
    longest_gap_seconds: Mapped[float] = mapped_column(default=0.0, server_default="0")
    state: Mapped[RecordingState] = mapped_column(str_enum(RecordingState), default=RecordingState.RECORDING)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]

    call: Mapped[Call] = relationship(back_populates="recordings")
    transcripts: Mapped[list[Transcript]] = relationship(back_populates="recording", order_by="Transcript.id")
