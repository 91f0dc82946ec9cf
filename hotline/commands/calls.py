"""``hotline calls``: the call log."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from models.call import Call, CallSegment, CallSupervision
from models.calllog import agent_segments, supervisions


@click.group("calls")
def calls() -> None:
    """The call log."""


def call_as_dict(call: Call) -> dict[str, Any]:
    recording = call.recording
    return {
        "id": call.id,
        "direction": call.direction.value,
        "caller_id": call.caller_id,
        "callee": call.callee,
        "started_at": _time(call.ring_at),
        "answered_at": _time(call.answered_at),
        "ended_at": _time(call.ended_at),
        "outcome": call.outcome.value if call.outcome else None,
        "hangup_by": call.hangup_by.value if call.hangup_by else None,
        "queue": call.queue.name if call.queue else None,
        "agent": call.agent.username if call.agent else None,
        "agent_extension": call.agent.extension if call.agent else None,
        "bridged_at": _time(call.bridged_at),
        "wait_s": wait_seconds(call),
        "transfers": [{"from": t.from_, "to": t.to, "at": _time(t.at), "kind": t.kind.value} for t in call.transfers],
        "segments": [{"agent": s["agent"], "from": _time(s["from"]), "to": _time(s["to"])} for s in agent_segments(call)],
        "supervisions": [{**row, "at": _time(row["at"]), "until": _time(row["until"])} for row in supervisions(call)],
        "recording": recording.path if recording else None,
        "ticket": call.ticket.number if call.ticket else None,
    }


def wait_seconds(call: Call) -> float | None:
    """How long the caller queued: until an agent took them or they hung up (None: never queued, or still waiting)."""
    left = call.bridged_at or call.ended_at
    if call.queued_at is None or left is None:
        return None
    return round((left - call.queued_at).total_seconds(), 1)


def _time(value: Any) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value else None


@calls.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--limit", default=50, show_default=True, help="How many calls, newest first.")
@click.pass_context
def calls_list(ctx: click.Context, as_json: bool, limit: int) -> None:
    """Calls, newest first: who, when, how it ended, recording and ticket."""
    from hotline.cli import settings_of
    from models.db import session_scope

    with session_scope(settings_of(ctx)) as session:
        query = (select(Call).order_by(Call.ring_at.desc(), Call.id.desc()).limit(limit)
                 .options(selectinload(Call.recordings), selectinload(Call.ticket), selectinload(Call.queue),
                          selectinload(Call.agent), selectinload(Call.transfers),
                          selectinload(Call.segments).selectinload(CallSegment.agent),
                          selectinload(Call.supervisions).selectinload(CallSupervision.supervisor)))
        rows = [call_as_dict(call) for call in session.scalars(query)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(f"{row['id']:>6} {row['started_at']} {row['direction']:8} {row['caller_id']:>16} → {row['callee']:<8}"
                   f" {row['outcome'] or row_state(row):10} {row['ticket'] or '-':14} {row['recording'] or '-'}")


def row_state(row: dict[str, Any]) -> str:
    return "live" if row["ended_at"] is None else "-"
