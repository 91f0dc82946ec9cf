"""The customer directory: one customer per number, even when first calls race."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from models.customer import CustomerPhone
from models.db import session_factory
from models.directory import customer_for_number


def test_two_first_calls_from_a_new_number_share_one_customer(settings):
    sessions = session_factory(settings)
    barrier = threading.Barrier(2)
    found: list[int] = []
    errors: list[BaseException] = []

    def first_call() -> None:
        with sessions() as session:
            try:
                barrier.wait()
                found.append(customer_for_number(session, "+8613800138000").id)
                session.commit()
            except BaseException as exc:  # reported below, with the thread's traceback lost otherwise
                errors.append(exc)

    threads = [threading.Thread(target=first_call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(CustomerPhone)) == 1
    assert len(found) == 2
