"""Call queues: the hotline numbers routed to each, the skills its agents need, and its timers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship


from models.base import Base


class Queue(Base):
    """A call queue (呼叫中心, 技术支持, 售后服务, a dialect line).

    ``numbers`` are the hotline numbers whose callers it takes. Several queues may share a
    number: then each has a ``menu_key`` (the DTMF digit of "技术咨询请按1") and the one without a
    key takes the callers who press nothing. ``skills`` are required agent skills, each ``name`` or
    ``name:level`` (the minimum level). Callers waiting ``max_wait_seconds`` overflow to
    ``overflow_queue`` (or, with none, stay queued until the virtual-hold offer exists).
    Timers left ``None`` take the ``[queues]`` defaults from the settings.
    """

    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    numbers: Mapped[list[Any]] = mapped_column(default=list)
    skills: Mapped[list[Any]] = mapped_column(default=list)
    language: Mapped[str | None] = mapped_column(String(16))
    menu_key: Mapped[str | None] = mapped_column(String(1))
    wrap_up_seconds: Mapped[float | None]
    ring_timeout_seconds: Mapped[float | None]
    announce_seconds: Mapped[float | None]
    max_wait_seconds: Mapped[float | None]
    virtual_hold_after_seconds: Mapped[float | None]  # waited this long, a caller may keep their place; 0 never
    overflow_queue_id: Mapped[int | None] = mapped_column(ForeignKey("queues.id"))

    overflow_queue: Mapped[Queue | None] = relationship(remote_side=[id])

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"
