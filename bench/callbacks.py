"""Callbacks on time: how late each one is dialled, with RQ's scheduler, without it, and after Redis forgets.

    python bench/callbacks.py [--callbacks 10000] [--spread 300] [--outage-callbacks 1000]

Nothing is asserted; it prints figures. One migrated installation (SQLite, embedded Redis) in a
temporary home; `hotline scheduler` runs as its own process (RQ's scheduler, as `hotline run` starts
it) and this process runs what `hotline sip` runs for callbacks: the dialler queue's worker and the
reconciler (`workers/dialler.py` `DiallerService`), with the real rules before a dial
(`models/callbacks.py` `start_attempt`: the claim in the database). Only the SIP call is left out — its
own capacity is `bench/calls.py`'s — so what is measured is the scheduling: from a callback's due time
to its claim, where the dial starts.

1. ``--callbacks`` automatic callbacks due over ``--spread`` seconds, from a minute after they are written.
2. ``--outage-callbacks`` due over the next minute and a half; the scheduler is killed (SIGKILL) ten
   seconds into it: the reconciler moves what is left scheduled after its time.
3. The same again with the scheduler back; Redis is flushed ten seconds into it: the reconciler puts
   every job back from the database.

Per phase: dialled/expected, lateness p50/p99/max, callbacks dialled per minute at the peak minute,
and any callback dialled twice (there must be none).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select  # noqa: E402

from bench.calls import installation  # noqa: E402
from config import Settings  # noqa: E402
from models.base import utcnow  # noqa: E402
from models.callback import AttemptOutcome, Callback, CallbackAttempt, CallbackKind, CallbackMode  # noqa: E402
from models.callbacks import dialled, finish_attempt, schedule, start_attempt  # noqa: E402
from models.db import session_scope  # noqa: E402
from workers.connection import redis_connection  # noqa: E402
from workers.dialler import DiallerService  # noqa: E402

CONFIG = """
[callbacks]
calling_hours_start = "00:00"
calling_hours_end = "23:59"
"""


def take(settings: Settings):  # type: ignore[no-untyped-def]
    """What `Dialler.take` does up to the dial: the rules and the claim; the attempt then ends at once."""

    def claim(callback_id: int, number: int, staff_id: int | None = None) -> str:
        with session_scope(settings) as session:
            start = start_attempt(session, settings, callback_id, number, by="bench", staff_id=staff_id)
            if start.attempt is not None:
                dialled(session, start.attempt, "bench")
                finish_attempt(session, settings, start.attempt, AttemptOutcome.COMPLETED)
        return start.why

    return claim


def add_callbacks(settings: Settings, count: int, first: datetime, spread: float) -> list[int]:
    with session_scope(settings) as session:
        return [schedule(session, settings, kind=CallbackKind.CUSTOMER_REQUESTED, phone=f"+861390{i:07d}",
                         mode=CallbackMode.AUTO, earliest=first + timedelta(seconds=spread * i / count),
                         latest=first + timedelta(hours=2)).id
                for i in range(count)]


def wait_dialled(settings: Settings, ids: list[int], until: float) -> None:
    while time.monotonic() < until:
        with session_scope(settings) as session:
            done = session.scalar(select(CallbackAttempt.id).where(CallbackAttempt.callback_id == ids[-1]))
        if done is not None:
            time.sleep(5)  # the stragglers of the last seconds
            return
        time.sleep(1)


def report(settings: Settings, name: str, ids: list[int], after: datetime | None = None) -> None:
    with session_scope(settings) as session:
        attempts = session.execute(select(CallbackAttempt.callback_id, CallbackAttempt.due_at, CallbackAttempt.dialled_at)
                                   .where(CallbackAttempt.callback_id.in_(ids))).all()
        states = Counter(c.value for c in session.scalars(select(Callback.state).where(Callback.id.in_(ids))))
    twice = sum(1 for n in Counter(a.callback_id for a in attempts).values() if n > 1)
    measured = [a for a in attempts if a.dialled_at and a.due_at and (after is None or a.due_at >= after)]
    late = sorted((a.dialled_at - a.due_at).total_seconds() for a in measured)
    per_minute = Counter(a.dialled_at.replace(second=0, microsecond=0) for a in attempts if a.dialled_at)

    def pct(p: float) -> float:
        return late[min(len(late) - 1, int(p * len(late)))] if late else float("nan")

    scope = f" (due after {after:%H:%M:%S})" if after else ""
    print(f"{name}: dialled {len(attempts)}/{len(ids)}, states {dict(states)}, dialled twice {twice}")
    print(f"  lateness{scope} over {len(late)}: p50 {pct(0.5):.2f} s, p99 {pct(0.99):.2f} s, "
          f"max {late[-1] if late else float('nan'):.2f} s; peak {max(per_minute.values(), default=0)} dialled/minute")


def start_scheduler(env: dict[str, str], home: Path) -> subprocess.Popen[bytes]:
    log = open(home / "scheduler.log", "ab")  # noqa: SIM115 (lives as long as the process)
    return subprocess.Popen([sys.executable, "-c", "from hotline.cli import main; main()", "scheduler"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callbacks", type=int, default=10000)
    parser.add_argument("--spread", type=float, default=300.0, help="seconds over which they fall due")
    parser.add_argument("--outage-callbacks", type=int, default=1000)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="hotline-bench-callbacks-") as tmp:
        home = Path(tmp)
        (home / "hotline.toml").write_text(CONFIG)
        env, settings, _redis = installation(home, home / "hotline.toml")
        print(f"reconcile every {settings.callbacks.reconcile_seconds:g} s, "
              f"handed to RQ {settings.callbacks.schedule_ahead_minutes:g} min ahead")
        scheduler = start_scheduler(env, home)
        service = DiallerService(settings, take(settings))
        service.start()
        try:
            started = time.monotonic()
            # Due from a minute after they are all written (writing 10 000 takes about a minute).
            first = utcnow() + timedelta(seconds=60 + args.callbacks / 100)
            ids = add_callbacks(settings, args.callbacks, first, args.spread)
            print(f"{args.callbacks} callbacks scheduled in {time.monotonic() - started:.1f} s")
            wait_dialled(settings, ids, time.monotonic() + 60 + args.callbacks / 100 + args.spread + 600)
            report(settings, "1. with RQ's scheduler", ids)

            ids = add_callbacks(settings, args.outage_callbacks, utcnow() + timedelta(seconds=30), 90)
            time.sleep(40)
            killed_at = utcnow()
            scheduler.send_signal(signal.SIGKILL)
            scheduler.wait()
            wait_dialled(settings, ids, time.monotonic() + 300)
            report(settings, "2. scheduler killed", ids, after=killed_at)

            scheduler = start_scheduler(env, home)
            ids = add_callbacks(settings, args.outage_callbacks, utcnow() + timedelta(seconds=30), 90)
            time.sleep(40)
            flushed_at = utcnow()
            redis_connection(settings).flushall()
            wait_dialled(settings, ids, time.monotonic() + 300)
            report(settings, "3. Redis flushed", ids, after=flushed_at)
        finally:
            service.stop()
            scheduler.kill()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
