"""Alarms: faults a person must see (a call that could not be recorded, a lost registration)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, str_enum, utcnow


class AlarmKind(str, Enum):
    RECORDING_FAILED = "recording_failed"
    REGISTRATION_FAILED = "registration_failed"
    PBX_DOWN = "pbx_down"
    TRANSCRIPTION_FAILED = "transcription_failed"
    BAD_INPUT = "bad_input"
    RECORDING_GAP = "recording_gap"  # the media clock fell behind: time written as silence


class Alarm(Base):
    __tablename__ = "alarms"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[AlarmKind] = mapped_column(str_enum(AlarmKind), index=True)
    message: Mapped[str] = mapped_column(Text)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    source: Mapped[str] = mapped_column(String(64), default="")
