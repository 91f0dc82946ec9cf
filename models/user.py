"""Users: individual logins (no shared accounts), each with one role."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, str_enum, utcnow


class Role(str, Enum):
    AGENT = "agent"
    REVISIT = "revisit"
    QA = "qa"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[Role] = mapped_column(str_enum(Role))
    # The softphone's SIP extension; registers at the PBX with the user's password.
    extension: Mapped[str | None] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    # md5("extension:realm:password"): what the local PBX checks, without keeping the password.
    sip_ha1: Mapped[str | None] = mapped_column(String(32))
    # Skills route calls: dialects ("粤语") and product lines.
    skills: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<User {self.username} {self.role.value}>"

    # The session protocol of web logins (duck-typed, so models need not import Flask-Login).
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        return str(self.id)
