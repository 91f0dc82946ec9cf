"""``hotline callbacks``: the revisits and promised callbacks — list, add, dial now."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import click
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from config import Settings
from models.callback import Callback, CallbackKind, CallbackMode
from models.callbacks import OPEN, CallbackError, callback_as_dict, dial_now, due_now, mark_due, schedule
from models.db import session_scope
from models.ticket import Ticket
from models.user import User
from workers.dispatch import enqueue_callback


@click.group("callbacks")
def callbacks() -> None:
    """Callbacks (回访): satisfaction and complaint revisits, supervisor calls, callbacks promised to callers."""


@callbacks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--all", "show_all", is_flag=True, help="Also those done, unreachable or cancelled.")
@click.pass_context
def callbacks_list(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """Open callbacks by deadline (earliest ``latest`` first)."""
    from hotline.cli import settings_of

    settings = settings_of(ctx)
    with session_scope(settings) as session:
        mark_due(session)
        query = select(Callback).options(selectinload(Callback.ticket), selectinload(Callback.assignee))
        if not show_all:
            query = query.where(Callback.state.in_(OPEN))
        rows = [callback_as_dict(c, settings) for c in session.scalars(query.order_by(Callback.due_by, Callback.id))]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(f"{row['id']:>5} {row['kind']:18} {row['phone']:16} {row['state']:11} by {row['latest']} "
                   f"{row['mode']:5} attempts {row['attempts']} {row['ticket'] or ''} {row['outcome'] or ''}")


@callbacks.command("add")
@click.option("--phone", required=True, help="E.164, national, or an extension of the PBX.")
@click.option("--kind", type=click.Choice([k.value for k in CallbackKind]), required=True)
@click.option("--ticket", "ticket_number", help="The ticket it is about.")
@click.option("--mode", type=click.Choice([m.value for m in CallbackMode]), help="Default: the kind's setting.")
@click.option("--at", "at_text", help="Earliest time, ISO 8601 (e.g. 2026-12-06T10:00+08:00); default now.")
@click.pass_context
def callbacks_add(ctx: click.Context, phone: str, kind: str, ticket_number: str | None, mode: str | None,
                  at_text: str | None) -> None:
    """Schedule a callback; prints its id (an open one of the same kind for the same ticket or phone is reused)."""
    from hotline.cli import settings_of

    settings = settings_of(ctx)
    at = parse_time(at_text, settings) if at_text else None
    with session_scope(settings) as session:
        ticket = None
        if ticket_number:
            ticket = session.scalar(select(Ticket).where(Ticket.number == ticket_number))
            if ticket is None:
                raise click.ClickException(f"no ticket {ticket_number}")
        try:
            callback = schedule(session, settings, kind=CallbackKind(kind), phone=phone, ticket=ticket, earliest=at,
                                mode=CallbackMode(mode) if mode else None)
        except CallbackError as exc:
            raise click.ClickException(str(exc)) from exc
        callback_id, flag, due = callback.id, callback.flag, due_now(callback)
    if due is not None:
        enqueue_callback(settings, due.callback_id, due.number, due.at)
    click.echo(callback_id)
    if flag:
        click.echo(f"warning: {flag}", err=True)


@callbacks.command("dial")
@click.argument("callback_id", type=int)
@click.option("--staff", "staff_name", help="User whose softphone rings first (staff callbacks; default: the assignee).")
@click.pass_context
def callbacks_dial(ctx: click.Context, callback_id: int, staff_name: str | None) -> None:
    """Dial a callback now (a running ``hotline sip`` places it)."""
    from hotline.cli import settings_of

    settings = settings_of(ctx)
    with session_scope(settings) as session:
        callback = session.get(Callback, callback_id)
        if callback is None:
            raise click.ClickException(f"no callback {callback_id}")
        staff_id = _staff_id(session, callback, staff_name)
        try:
            attempt = dial_now(session, settings, callback)
        except CallbackError as exc:
            raise click.ClickException(str(exc)) from exc
    enqueue_callback(settings, callback_id, attempt, None, staff_id)
    click.echo(f"callback {callback_id}: attempt {attempt} queued for dialling")


def _staff_id(session: Session, callback: Callback, staff_name: str | None) -> int | None:
    if staff_name is None:
        if callback.mode is CallbackMode.STAFF and callback.assignee_id is None:
            raise click.ClickException(f"callback {callback.id} is a staff callback: name who calls with --staff")
        return callback.assignee_id if callback.mode is CallbackMode.STAFF else None
    user = session.scalar(select(User).where(User.username == staff_name))
    if user is None or not user.extension:
        raise click.ClickException(f"{staff_name!r} is no user with an extension")
    return user.id


def parse_time(text: str, settings: Settings) -> datetime:
    """ISO 8601; without an offset, the team's time zone."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}", param_hint="--at") from exc
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(settings.general.timezone))
