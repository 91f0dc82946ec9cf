"""A durable local journal: what could not be written yet, kept on disk and applied in order.

``Journal`` is one lane: an append-only JSON-lines file (``<lane>.jsonl``), each line
``{"seq": N, "entry": {...}}``, flushed and fsync'ed before ``append`` returns, and an "applied up
to" pointer (``<lane>.applied``, replaced atomically). Entries after the pointer are replayed in
order by the next process. ``JournalWriter`` is the one thread that applies a lane's entries.

Exactly once: an entry is applied, then the pointer moves past it. A crash between the two
applies that one entry again on restart, so the ``apply`` function must be idempotent (the call
log's functions are: keyed by the call's uid). Idempotent application plus at-least-once
replay is exactly-once effect.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Everything applied and the file at least this big: it is emptied (the pointer keeps the count).
COMPACT_BYTES = 64 * 1024
# How often an idle writer looks whether it is being stopped.
IDLE_POLL_SECONDS = 0.2
# The share of the time a writer may be busy: after each entry it rests twice as long as the entry
# took. The media clock shares this process's GIL, and a writer busy without a pause (an ORM
# transaction and three fsyncs per entry while 17 calls a second were starting) held it so often
# that the 20 ms clock fell over a second behind at 250 calls (bench/calls.py). A backlog waits in
# the journal, which is what it is for.
BUSY_SHARE = 1 / 3
# An entry that waited for a lock (SQLite's busy timeout is 30 s) was not busy all that time: the
# rest counts at most this much of it, or the journal would catch up a minute after an outage.
REST_BASIS_MAX_SECONDS = 1.0


class JournalInUse(RuntimeError):
    """Another process (or another Journal in this one) holds the lane: two writers would interleave."""


class Journal:
    """One lane of the journal in ``directory``; safe to append to from any thread."""

    def __init__(self, directory: Path, lane: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.lane = lane
        self.path = directory / f"{lane}.jsonl"
        self._pointer = directory / f"{lane}.applied"
        self._rejected = directory / f"{lane}.rejected.jsonl"
        self._changed = threading.Condition()
        self._file = open(self.path, "a+b", buffering=0)  # unbuffered: a failed write leaves nothing behind
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise JournalInUse(f"journal {self.path} is in use by another process") from None
        self._applied = self._read_pointer()
        self._pending: deque[tuple[int, dict[str, Any]]] = deque(
            (seq, entry) for seq, entry in self._read_lines() if seq > self._applied
        )
        self._last = self._pending[-1][0] if self._pending else self._applied

    @property
    def applied(self) -> int:
        """The sequence number of the last applied entry."""
        return self._applied

    @property
    def last(self) -> int:
        """The sequence number of the last appended entry."""
        return self._last

    def pending_count(self) -> int:
        with self._changed:
            return len(self._pending)

    def append(self, entry: dict[str, Any]) -> int:
        """Write the entry durably (fsync) and return its sequence number.

        A failed write (disk full) raises OSError and leaves the file as it was.
        """
        with self._changed:
            seq = self._last + 1
            line = json.dumps({"seq": seq, "entry": entry}, ensure_ascii=False, separators=(",", ":"))
            size = self._size()
            try:
                self._write_all(line.encode() + b"\n")
                os.fsync(self._file.fileno())
            except OSError:
                # Half a line would swallow the next entry: cut it off.
                self._file.truncate(size)
                raise
            self._last = seq
            self._pending.append((seq, entry))
            self._changed.notify_all()
            return seq

    def next_pending(self, timeout: float) -> tuple[int, dict[str, Any]] | None:
        """The oldest unapplied entry (left in place), waiting up to ``timeout`` for one."""
        with self._changed:
            self._changed.wait_for(lambda: self._pending, timeout)
            return self._pending[0] if self._pending else None

    def mark_applied(self, seq: int) -> None:
        """The oldest pending entry, ``seq``, is applied: move the pointer past it."""
        with self._changed:
            if not self._pending or self._pending[0][0] != seq:
                raise ValueError(f"journal {self.path}: {seq} is not the oldest pending entry")
            self._write_pointer(seq)
            self._applied = seq
            self._pending.popleft()
            if not self._pending and self._size() >= COMPACT_BYTES:
                self._compact()
            self._changed.notify_all()

    def set_aside(self, seq: int, entry: dict[str, Any], error: str) -> None:
        """An entry that can never be applied goes to ``<lane>.rejected.jsonl``, so it blocks nothing."""
        self._reject({"seq": seq, "entry": entry, "error": error})
        self.mark_applied(seq)

    def wait_applied(self, seq: int, timeout: float) -> bool:
        """Wait until every entry up to ``seq`` is applied."""
        with self._changed:
            return self._changed.wait_for(lambda: self._applied >= seq, timeout)

    def close(self) -> None:
        """Release the lane; an empty lane leaves an empty file behind."""
        with self._changed:
            if not self._pending:
                self._compact()
            self._file.close()

    def _write_all(self, data: bytes) -> None:
        written = 0
        while written < len(data):  # a nearly full disk takes part of a write
            written += self._file.write(data[written:])

    def _size(self) -> int:
        # Closed when a writer outlived its stop(): the next process compacts instead.
        return 0 if self._file.closed else os.fstat(self._file.fileno()).st_size

    def _compact(self) -> None:
        self._file.truncate(0)
        os.fsync(self._file.fileno())

    def _read_pointer(self) -> int:
        try:
            return int(self._pointer.read_text(encoding="ascii"))
        except FileNotFoundError:
            return 0

    def _write_pointer(self, seq: int) -> None:
        # Written aside and renamed over the pointer: a crash leaves the old or the new value.
        temporary = self._pointer.with_suffix(".tmp")
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(str(seq))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._pointer)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _read_lines(self) -> list[tuple[int, dict[str, Any]]]:
        self._file.seek(0)
        data = self._file.read()
        complete, _, torn = data.rpartition(b"\n")
        if torn:
            # A write cut short (the process killed mid-line): never acknowledged, so not lost.
            log.warning("journal %s: ignoring a torn last line (%d bytes) left by an interrupted write",
                        self.path, len(torn))
            self._file.truncate(len(complete) + 1 if complete else 0)
        entries = []
        for number, line in enumerate(complete.split(b"\n") if complete else [], start=1):
            try:
                record = json.loads(line)
                entries.append((int(record["seq"]), record["entry"]))
            except (ValueError, KeyError, TypeError):
                log.error("journal %s: line %d is unreadable; kept in %s", self.path, number, self._rejected)
                self._reject({"unreadable": line.decode(errors="replace")})
        return entries

    def _reject(self, record: dict[str, Any]) -> None:
        with open(self._rejected, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class JournalWriter:
    """The one thread that applies a journal's entries, in order, retrying while ``apply`` fails.

    An exception in ``retry_on`` (the database is locked or unreachable) means "not now": the same
    entry is tried again every ``retry_seconds``, and the outage is logged once, with its end.
    Any other exception means the entry itself is bad: it is logged and set aside, so one bad
    entry never holds back the calls behind it. The thread is busy at most ``BUSY_SHARE`` of the time.
    """

    def __init__(self, journal: Journal, apply: Callable[[dict[str, Any]], None], retry_seconds: float, name: str,
                 *, retry_on: tuple[type[BaseException], ...] = (Exception,)) -> None:
        self.journal = journal
        self.apply = apply
        self.retry_seconds = retry_seconds
        self.name = name
        self.retry_on = retry_on
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"journal-{name}", daemon=True)
        self._outage_began: float | None = None
        self._applied_in_outage = 0

    def start(self) -> None:
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until everything appended so far is applied; False if ``timeout`` passed first."""
        return self.journal.wait_applied(self.journal.last, timeout)

    def stop(self, timeout: float) -> bool:
        """Apply what is pending (unless in an outage), then stop; True when nothing is left over.

        What is left over stays in the journal for the next process.
        """
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return self.journal.applied >= self.journal.last

    @property
    def stopped(self) -> bool:
        """The thread has ended (or never started)."""
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            pending = self.journal.next_pending(IDLE_POLL_SECONDS)
            if pending is None:
                if self._stopping.is_set():
                    return
                continue
            if not self._apply(*pending):
                return

    def _apply(self, seq: int, entry: dict[str, Any]) -> bool:
        """Apply one entry until it is done; False when stopped during an outage."""
        while True:
            began = time.monotonic()
            try:
                self.apply(entry)
            except self.retry_on as exc:
                self._outage(exc)
                if self._stopping.wait(self.retry_seconds):
                    return False
                continue
            except Exception as exc:
                log.exception("%s: journal entry %d cannot be applied; set aside: %s", self.name, seq, entry)
                self.journal.set_aside(seq, entry, repr(exc))
            else:
                self.journal.mark_applied(seq)
            self._caught_up()
            self._rest(time.monotonic() - began)
            return True

    def _rest(self, busy: float) -> None:
        """Pause in proportion to ``busy`` (see ``BUSY_SHARE``); not once stopping: ``stop`` drains at full speed."""
        self._stopping.wait(min(busy, REST_BASIS_MAX_SECONDS) * (1 / BUSY_SHARE - 1))

    def _outage(self, exc: BaseException) -> None:
        if self._outage_began is not None:
            return  # one line per outage, not one per retry
        self._outage_began = time.monotonic()
        self._applied_in_outage = 0
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("%s unavailable (%s), %d call events kept in the journal; retrying every %g s",
                    self.name, reason, self.journal.pending_count(), self.retry_seconds)

    def _caught_up(self) -> None:
        if self._outage_began is None:
            return
        self._applied_in_outage += 1
        if self.journal.pending_count() == 0:
            log.info("%s answers again: %d call events applied, journal caught up after %.1f s",
                     self.name, self._applied_in_outage, time.monotonic() - self._outage_began)
            self._outage_began = None
