"""The journal: durable appends, replay in order after a restart or a kill, torn lines, the writer."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from telephony import journal as journal_module
from telephony.journal import Journal, JournalInUse, JournalWriter

ROOT = Path(__file__).resolve().parents[2]


def pending(journal: Journal) -> list[dict]:
    entries = []
    while (item := journal.next_pending(0)) is not None:
        entries.append(item[1])
        journal.mark_applied(item[0])
    return entries


def test_unapplied_entries_are_replayed_in_order_after_a_restart(tmp_path):
    journal = Journal(tmp_path, "calls")
    for n in range(1, 4):
        assert journal.append({"n": n}) == n
    journal.mark_applied(1)
    journal.close()
    reopened = Journal(tmp_path, "calls")
    assert (reopened.applied, reopened.last) == (1, 3)
    assert reopened.append({"n": 4}) == 4
    assert pending(reopened) == [{"n": 2}, {"n": 3}, {"n": 4}]


def test_an_entry_is_on_disk_when_append_returns(tmp_path):
    journal = Journal(tmp_path, "calls")
    journal.append({"caller": "王先生 13800138000"})
    [line] = (tmp_path / "calls.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line) == {"seq": 1, "entry": {"caller": "王先生 13800138000"}}


def test_entries_acknowledged_before_a_kill_survive_it(tmp_path):
    writer = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys; from pathlib import Path; from telephony.journal import Journal\n"
            f"journal = Journal(Path({str(tmp_path)!r}), 'calls')\n"
            "n = 0\n"
            "while True:\n"
            "    n = journal.append({'n': n + 1, 'pad': 'x' * 2000})\n"
            "    print(n, flush=True)\n"
        )],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    acknowledged = [int(writer.stdout.readline()) for _ in range(50)]
    writer.kill()
    writer.wait()
    entries = pending(Journal(tmp_path, "calls"))
    assert [e["n"] for e in entries][:50] == acknowledged
    assert [e["n"] for e in entries] == list(range(1, len(entries) + 1))


def test_a_failed_append_raises_and_leaves_the_journal_intact(tmp_path):
    # A real failed write: the file may not grow past its size limit (as on a full disk).
    subprocess.run(
        [sys.executable, "-c", (
            "import resource, signal; from pathlib import Path; from telephony.journal import Journal\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"journal = Journal(Path({str(tmp_path)!r}), 'calls')\n"
            "journal.append({'n': 1})\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (journal.path.stat().st_size + 10, hard))\n"
            "try:\n"
            "    journal.append({'n': 2, 'pad': 'x' * 100})\n"
            "    raise SystemExit('the append did not fail')\n"
            "except OSError:\n"
            "    pass\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))\n"
            "journal.append({'n': 3})\n"
        )],
        cwd=ROOT, check=True,
    )
    assert pending(Journal(tmp_path, "calls")) == [{"n": 1}, {"n": 3}]


def test_a_torn_last_line_is_ignored_with_a_log_line(tmp_path, caplog):
    journal = Journal(tmp_path, "calls")
    journal.append({"n": 1})
    journal.close()
    with open(tmp_path / "calls.jsonl", "ab") as handle:
        handle.write(b'{"seq":2,"entry":{"n"')  # the process was killed mid-write
    reopened = Journal(tmp_path, "calls")
    assert "torn last line" in caplog.text
    assert reopened.append({"n": 2}) == 2
    assert pending(reopened) == [{"n": 1}, {"n": 2}]


def test_an_unreadable_line_is_kept_aside_and_the_others_replayed(tmp_path, caplog):
    (tmp_path / "calls.jsonl").write_bytes(b'{"seq":1,"entry":{"n":1}}\nnot json\n{"seq":2,"entry":{"n":2}}\n')
    journal = Journal(tmp_path, "calls")
    assert pending(journal) == [{"n": 1}, {"n": 2}]
    assert "line 2 is unreadable" in caplog.text
    assert json.loads((tmp_path / "calls.rejected.jsonl").read_text()) == {"unreadable": "not json"}


def test_the_file_is_emptied_once_everything_is_applied(tmp_path, monkeypatch):
    monkeypatch.setattr(journal_module, "COMPACT_BYTES", 100)
    journal = Journal(tmp_path, "calls")
    for n in range(5):
        journal.append({"pad": "x" * 50})
    assert len(pending(journal)) == 5
    assert (tmp_path / "calls.jsonl").stat().st_size == 0
    assert journal.append({"n": 6}) == 6  # numbering goes on from the pointer
    journal.close()
    assert Journal(tmp_path, "calls").last == 6


def test_a_lane_has_one_journal_at_a_time(tmp_path):
    journal = Journal(tmp_path, "calls")
    with pytest.raises(JournalInUse, match="in use"):
        Journal(tmp_path, "calls")
    Journal(tmp_path, "jobs").close()  # another lane is independent
    journal.close()
    Journal(tmp_path, "calls").close()


class Outage:
    """An apply function whose store is down until ``up`` is set."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.applied: list[dict] = []
        self.attempts = 0

    def __call__(self, entry: dict) -> None:
        self.attempts += 1
        if not self.up.is_set():
            raise ConnectionError("connection refused")
        if entry.get("bad"):
            raise KeyError("state")
        self.applied.append(entry)


@pytest.fixture
def outage() -> Outage:
    return Outage()


def start_writer(journal: Journal, apply: Outage) -> JournalWriter:
    writer = JournalWriter(journal, apply, 0.02, "database", retry_on=(ConnectionError,))
    writer.start()
    return writer


def test_writer_retries_the_same_entry_logs_the_outage_once_and_catches_up(tmp_path, outage, caplog):
    caplog.set_level(logging.INFO, logger="telephony.journal")
    journal = Journal(tmp_path, "calls")
    for n in range(3):
        journal.append({"n": n})
    writer = start_writer(journal, outage)
    assert not writer.flush(0.3)
    assert outage.attempts > 3 and outage.applied == []
    outage.up.set()
    assert writer.flush(5) and writer.stop(1)
    assert outage.applied == [{"n": 0}, {"n": 1}, {"n": 2}]
    outages = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert outages == ["database unavailable (connection refused), 3 call events kept in the journal; "
                       "retrying every 0.02 s"]
    assert "database answers again: 3 call events applied" in caplog.text


def test_a_bad_entry_is_set_aside_and_holds_nothing_back(tmp_path, outage, caplog):
    outage.up.set()
    journal = Journal(tmp_path, "calls")
    writer = start_writer(journal, outage)
    journal.append({"n": 1})
    journal.append({"n": 2, "bad": True})
    journal.append({"n": 3})
    assert writer.flush(5)
    assert outage.applied == [{"n": 1}, {"n": 3}]
    rejected = json.loads((tmp_path / "calls.rejected.jsonl").read_text())
    assert rejected["seq"] == 2 and rejected["entry"] == {"n": 2, "bad": True} and "KeyError" in rejected["error"]
    assert "cannot be applied; set aside" in caplog.text
    writer.stop(1)


def test_stopping_during_an_outage_leaves_the_entries_to_the_next_process(tmp_path, outage):
    journal = Journal(tmp_path, "calls")
    writer = start_writer(journal, outage)
    journal.append({"n": 1})
    journal.append({"n": 2})
    assert not writer.stop(1)
    journal.close()
    outage.up.set()
    replaying = Journal(tmp_path, "calls")
    writer = start_writer(replaying, outage)
    assert writer.flush(5) and outage.applied == [{"n": 1}, {"n": 2}]
    assert writer.stop(1)


def test_stop_applies_what_is_pending_first(tmp_path, outage):
    outage.up.set()
    journal = Journal(tmp_path, "calls")
    writer = start_writer(journal, outage)
    for n in range(20):
        journal.append({"n": n})
    assert writer.stop(5)
    assert [e["n"] for e in outage.applied] == list(range(20))
