"""The customer directory: finding a customer by any of their phone numbers."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.customer import Customer, CustomerPhone
from models.phone import normalize


def find_by_number(session: Session, e164: str | None) -> Customer | None:
    """The customer owning this exact E.164 number; None for unknown or unparseable numbers."""
    if not e164:
        return None
    return session.scalar(select(Customer).join(CustomerPhone).where(CustomerPhone.number == e164))


def customer_for_number(session: Session, e164: str | None) -> Customer | None:
    """The customer with this number, created (nameless) on first contact; None without a valid number."""
    if not e164:
        return None
    customer = find_by_number(session, e164)
    if customer is not None:
        return customer
    try:
        # Two first calls from one new number race here: the loser's insert hits the unique
        # number, its savepoint rolls back, and it takes the customer the winner created.
        with session.begin_nested():
            customer = Customer(phones=[CustomerPhone(number=e164)])
            session.add(customer)
    except IntegrityError:
        customer = find_by_number(session, e164)
    return customer


def add_customer(session: Session, name: str, numbers: list[str], region: str, **fields: object) -> Customer:
    """A customer with several numbers in any formatting; an unparseable number is an error."""
    phones = []
    for raw in numbers:
        e164 = normalize(raw, region)
        if e164 is None:
            raise ValueError(f"not a valid phone number: {raw!r}")
        phones.append(CustomerPhone(number=e164))
    customer = Customer(name=name, phones=phones, **fields)
    session.add(customer)
    session.flush()
    return customer
