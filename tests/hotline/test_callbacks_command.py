"""``hotline ticket resolve`` and ``hotline callbacks list|add|dial``: the public forms of the README."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta, timezone

import pytest
from click.testing import CliRunner

from config import Settings
from hotline.cli import main
from models.accounts import add_user
from models.db import session_scope
from models.user import Role
from workers.connection import DIALLER_QUEUE, queue

FIELDS = {"id", "ticket", "kind", "phone", "earliest", "latest", "mode", "state", "attempts", "outcome",
          "satisfaction", "score"}


@pytest.fixture
def all_day(settings: Settings) -> Settings:
    settings.callbacks.calling_hours_start, settings.callbacks.calling_hours_end = time(0, 0), time(23, 59, 59)
    return settings


def run(cli: CliRunner, settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    # The same settings object the test changed: the CLI reads it from its context.
    return cli.invoke(main, list(args), obj={"settings": settings})


def listed(cli: CliRunner, settings: Settings) -> list[dict[str, object]]:
    result = run(cli, settings, "callbacks", "list", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_resolving_a_ticket_lists_its_satisfaction_revisit_and_queues_its_dial(cli, all_day):
    created = run(cli, all_day, "ticket", "create", "--phone", "13800138000", "--type", "repair",
                  "--description", "空调不制冷")
    number = created.output.strip()
    result = run(cli, all_day, "ticket", "resolve", number, "--note", "更换压缩机")
    assert result.exit_code == 0, result.output
    [row] = listed(cli, all_day)
    assert FIELDS <= row.keys()
    assert (row["ticket"], row["kind"], row["phone"], row["mode"], row["attempts"]) == \
        (number, "satisfaction", "+8613800138000", "auto", 0)
    earliest, latest = datetime.fromisoformat(row["earliest"]), datetime.fromisoformat(row["latest"])
    assert earliest.utcoffset() is not None and latest - earliest == timedelta(hours=24)
    assert queue(all_day, DIALLER_QUEUE).job_ids == [f"callback-{row['id']}-1"]
    shown = json.loads(run(cli, all_day, "ticket", "show", number, "--json").output)
    assert shown["status"] == "resolved"


def test_add_then_dial_a_staff_callback(cli, all_day):
    with session_scope(all_day) as session:
        add_user(session, "wang", Role.REVISIT, "revisit-secret", realm=all_day.sip.realm, extension="1005")
    result = run(cli, all_day, "callbacks", "add", "--phone", "1001", "--kind", "customer_requested")
    assert result.exit_code == 0, result.output
    callback_id = result.output.strip()
    [row] = listed(cli, all_day)
    assert (row["phone"], row["mode"], row["state"]) == ("1001", "staff", "due")
    assert not queue(all_day, DIALLER_QUEUE).job_ids  # a person calls it
    refused = run(cli, all_day, "callbacks", "dial", callback_id)
    assert refused.exit_code == 1 and "--staff" in refused.output
    dialled = run(cli, all_day, "callbacks", "dial", callback_id, "--staff", "wang")
    assert dialled.exit_code == 0, dialled.output
    [job] = queue(all_day, DIALLER_QUEUE).jobs
    assert job.args[0] == int(callback_id) and job.args[1] == 1 and job.args[2] is not None


def test_a_later_time_and_bad_input(cli, all_day):
    later = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    result = run(cli, all_day, "callbacks", "add", "--phone", "+8613900139000", "--kind", "complaint", "--at", later,
                 "--mode", "auto")
    assert result.exit_code == 0, result.output
    assert not queue(all_day, DIALLER_QUEUE).job_ids  # the reconciler hands it to RQ nearer its time
    bad = run(cli, all_day, "callbacks", "add", "--phone", "not a number", "--kind", "complaint")
    assert bad.exit_code == 1 and "invalid number" in bad.output
    assert run(cli, all_day, "callbacks", "add", "--phone", "1001", "--kind", "x").exit_code == 2
    assert run(cli, all_day, "callbacks", "add", "--phone", "1001", "--kind", "complaint", "--at", "tomorrow").exit_code == 2
    assert run(cli, all_day, "callbacks", "dial", "999").exit_code == 1
    assert run(cli, all_day, "ticket", "resolve", "SS20990101001", "--note", "x").exit_code == 1
