"""Caller IDs → E.164, whatever the formatting; extensions and anonymous callers stay unmatched."""

import pytest

from models.phone import normalize


@pytest.mark.parametrize(("raw", "expected"), [
    ("13800138000", "+8613800138000"),
    ("138-0013-8000", "+8613800138000"),
    ("+86 138 0013 8000", "+8613800138000"),
    ("008613800138000", "+8613800138000"),
    ("sip:13800138000@127.0.0.1", "+8613800138000"),
    ('"Wang" <sip:+8613800138000@pbx.example;user=phone>', "+8613800138000"),
    ("tel:010-6552-9988", "+861065529988"),
    ("(010) 65529988", "+861065529988"),
    ("+1 650 253 0000", "+16502530000"),
])
def test_numbers_normalise_to_e164(raw, expected):
    assert normalize(raw, "CN") == expected


@pytest.mark.parametrize("raw", ["", "anonymous", "sip:anonymous@anonymous.invalid", "1001", "12", "abc"])
def test_non_numbers_give_none(raw):
    assert normalize(raw, "CN") is None
