"""Phone numbers: caller IDs as they arrive (SIP URIs, formatting noise) → E.164."""

from __future__ import annotations

import re

import phonenumbers

# "sip:+86 138-0013-8000@pbx;user=phone", "<tel:010 1234 5678>", "\"Name\" <sip:1001@host>"
_URI_USER = re.compile(r"(?:sips?|tel):([^@;>]+)", re.IGNORECASE)


def user_part(raw: str) -> str:
    """The number (user part) of a SIP/tel URI or display string; the string itself otherwise."""
    match = _URI_USER.search(raw)
    return (match.group(1) if match else raw).strip().strip("<>\"")


def normalize(raw: str, region: str = "CN") -> str | None:
    """E.164 form of a caller ID, or None when it is not a valid number (anonymous, extensions)."""
    candidate = user_part(raw)
    if not candidate or not re.search(r"\d", candidate):
        return None
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
