"""User accounts: individual logins with hashed passwords and SIP credentials for the local PBX.

A password is set in one place, ``set_password``: the web login's hash and, for a user with an
extension, the SIP digest HA1 the PBX checks (``sip_ha1``, the one HA1 code path of Hotline).
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from models.agents import agent_of
from models.queues import QueueError, check_skills
from models.user import Role, User

MIN_PASSWORD_LENGTH = 8


class AccountError(ValueError):
    """A user cannot be created or changed as asked (duplicate name or extension, weak password)."""


def sip_ha1(extension: str, realm: str, password: str) -> str:
    """The digest HA1 (RFC 2617) a registrar checks: md5 of ``extension:realm:password``."""
    return hashlib.md5(f"{extension}:{realm}:{password}".encode()).hexdigest()


def set_password(user: User, password: str, *, realm: str) -> None:
    """Give ``user`` a new password: for the web login and, with an extension, for the PBX."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = generate_password_hash(password)
    user.sip_ha1 = sip_ha1(user.extension, realm, password) if user.extension else None


def add_user(
    session: Session,
    username: str,
    role: Role,
    password: str,
    *,
    realm: str,
    extension: str | None = None,
    skills: list[str] | None = None,
    display_name: str = "",
) -> User:
    if session.scalar(select(User).where(User.username == username)):
        raise AccountError(f"user {username!r} exists already")
    if extension and session.scalar(select(User).where(User.extension == extension)):
        raise AccountError(f"extension {extension} belongs to another user")
    try:
        checked_skills = check_skills(skills or [])
    except QueueError as exc:
        raise AccountError(str(exc)) from None
    user = User(username=username, display_name=display_name or username, role=role, extension=extension,
                skills=checked_skills)
    set_password(user, password, realm=realm)
    session.add(user)
    session.flush()
    if extension:
        agent_of(session, user)  # a new agent is logged out, and listed as such
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username, User.active.is_(True)))
    if user and check_password_hash(user.password_hash, password):
        return user
    return None
