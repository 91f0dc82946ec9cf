"""Accounts: one place sets a password, for the web login and for the PBX's digest HA1."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from config import Settings
from models.accounts import AccountError, add_user, authenticate, set_password, sip_ha1
from models.user import Role


def test_sip_ha1_is_the_rfc_2617_digest() -> None:
    # RFC 2617 §3.5: Mufasa / testrealm@host.com / "Circle Of Life".
    assert sip_ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == "939e7578ed9e3c518a452acee763bce9"


def test_user_with_an_extension_gets_its_ha1_and_no_stored_password(db: Session, settings: Settings) -> None:
    realm = settings.sip.realm
    user = add_user(db, "li", Role.AGENT, "pw-li-2001", realm=realm, extension="2001")
    assert user.sip_ha1 == sip_ha1("2001", realm, "pw-li-2001")
    assert "pw-li-2001" not in user.password_hash
    assert authenticate(db, "li", "pw-li-2001") is user
    assert add_user(db, "qa", Role.QA, "pw-qa-login", realm=realm).sip_ha1 is None  # no softphone, no HA1


def test_new_password_changes_the_login_and_the_sip_credentials(db: Session, settings: Settings) -> None:
    realm = settings.sip.realm
    user = add_user(db, "li", Role.AGENT, "pw-li-2001", realm=realm, extension="2001")
    set_password(user, "another-pw-2001", realm=realm)
    assert authenticate(db, "li", "pw-li-2001") is None
    assert authenticate(db, "li", "another-pw-2001") is user
    assert user.sip_ha1 == sip_ha1("2001", realm, "another-pw-2001")


def test_short_password_is_refused_and_changes_nothing(db: Session, settings: Settings) -> None:
    realm = settings.sip.realm
    user = add_user(db, "li", Role.AGENT, "pw-li-2001", realm=realm, extension="2001")
    before = (user.password_hash, user.sip_ha1)
    with pytest.raises(AccountError, match="at least 8 characters"):
        set_password(user, "short", realm=realm)
    assert (user.password_hash, user.sip_ha1) == before
    with pytest.raises(AccountError, match="at least 8 characters"):
        add_user(db, "wang", Role.AGENT, "short", realm=realm, extension="2002")


def test_names_and_extensions_are_unique(db: Session, settings: Settings) -> None:
    realm = settings.sip.realm
    add_user(db, "li", Role.AGENT, "pw-li-2001", realm=realm, extension="2001")
    with pytest.raises(AccountError, match="exists already"):
        add_user(db, "li", Role.QA, "pw-li-other", realm=realm)
    with pytest.raises(AccountError, match="extension 2001 belongs to another user"):
        add_user(db, "wang", Role.AGENT, "pw-wang-2001", realm=realm, extension="2001")
