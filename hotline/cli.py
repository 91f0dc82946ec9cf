"""The ``hotline`` command: set-up, the services one by one or all together, users and tickets."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import NoReturn

import click
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from config import ConfigError, Settings, load_settings
from config.settings import write_default_config
from hotline.commands.services import scheduler, service_problem, web, worker
from hotline.supervisor import run_services
from models.accounts import AccountError, add_user
from models.db import Unavailable, session_scope, upgrade
from models.ticket import Priority, Ticket, TicketType, Urgency
from models.user import Role, User
from workers.connection import LIVE_QUEUE

EXIT_CONFIG = 2


class HotlineGroup(click.Group):
    """Turns configuration errors and unusable servers into one clear message and exit code 2, from any command."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _fail(f"configuration error: {exc}")
        except (SQLAlchemyError, RedisError, Unavailable) as exc:
            settings = (ctx.obj or {}).get("settings")
            problem = service_problem(exc, settings) if settings else None
            if problem is None:
                raise
            _fail(str(problem))


def _fail(message: str) -> NoReturn:
    click.echo(f"hotline: {message}", err=True)
    sys.exit(EXIT_CONFIG)


def settings_of(ctx: click.Context) -> Settings:
    """Settings are read on first use, so `--help` works with a broken config."""
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings()
    return obj["settings"]


@click.group(cls=HotlineGroup)
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file (default: $HOTLINE_CONFIG or config/hotline.toml).")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Hotline: an offline call centre for after-sales service teams.

    Databases: HOTLINE_DATABASE_URL (or [database] url) is postgresql://user:password@host:5432/db
    (postgres:// and postgresql+psycopg:// too; psycopg 3 is the driver) or sqlite:////absolute/path.db;
    empty means a SQLite file under HOTLINE_HOME. Redis: REDIS_URL (or [redis] url) is redis://,
    rediss:// or unix://; empty means an embedded Redis. Services wait while either does not answer.
    """
    # One object for every subcommand's context, so errors are explained with the settings in use.
    ctx.ensure_object(dict)
    if config_path:
        # The environment carries the choice to every service `hotline run` starts.
        os.environ["HOTLINE_CONFIG"] = str(config_path)


@main.command()
@click.option("--admin", default="admin", show_default=True, help="Name of the admin user to create.")
@click.option("--password-stdin", is_flag=True, help="Read the admin password from standard input.")
@click.pass_context
def init(ctx: click.Context, admin: str, password_stdin: bool) -> None:
    """Write the default config if absent, create or upgrade the database, the default queue and an admin."""
    from models.queues import ensure_default_queue

    settings = settings_of(ctx)
    if write_default_config(settings.config_path):
        click.echo(f"wrote default configuration to {settings.config_path}")
    upgrade(settings)
    click.echo(f"database ready: {settings.database_url}")
    with session_scope(settings) as session:
        queue = ensure_default_queue(session, settings)
        created = f"queue {queue.name} created on {', '.join(queue.numbers) or 'no number'}" if queue else ""
    if created:
        click.echo(f"{created}; add more with: hotline queue add NAME --number N")
    with session_scope(settings) as session:
        if session.scalar(select(User).where(User.role == Role.ADMIN)):
            click.echo("an admin exists already; add users with: hotline user add NAME --role ROLE")
            return
        password = _read_password(True) if password_stdin else secrets.token_urlsafe(12)
        add_user(session, admin, Role.ADMIN, password, realm=settings.sip.realm)
    shown = "the password given" if password_stdin else f"password {password}"
    click.echo(f"admin user created: log in at http://{settings.web.host}:{settings.web.port}/ "
               f"as {admin!r} with {shown}")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Create or upgrade the schema to the newest migration."""
    settings = settings_of(ctx)
    upgrade(settings)
    click.echo(f"database upgraded: {settings.database_url}")


@main.group()
def user() -> None:
    """Users: individual logins."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--extension", help="SIP extension of the user's softphone.")
@click.option("--skill", "skills", multiple=True, help="A skill (dialect, product line); repeatable.")
@click.option("--display-name", default="")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_context
def user_add(ctx: click.Context, name: str, role: str, extension: str | None, skills: tuple[str, ...],
             display_name: str, password_stdin: bool) -> None:
    """Add a user; with --extension, their softphone can register at the local PBX."""
    settings = settings_of(ctx)
    password = _read_password(password_stdin)
    try:
        with session_scope(settings) as session:
            created = add_user(session, name, Role(role), password, realm=settings.sip.realm,
                               extension=extension, skills=list(skills), display_name=display_name)
            summary = f"user {created.username} ({created.role.value})"
            if extension:
                summary += f", extension {extension}"
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added {summary}")


@main.group()
def ticket() -> None:
    """Tickets (工单)."""


@ticket.command("create")
@click.option("--phone", required=True, help="The customer's phone number (any formatting).")
@click.option("--type", "ticket_type", type=click.Choice([t.value for t in TicketType]), required=True)
@click.option("--urgency", type=click.Choice([u.value for u in Urgency]), default=Urgency.NORMAL.value,
              show_default=True)
@click.option("--priority", type=click.Choice([p.value for p in Priority]), help="Default: from the urgency.")
@click.option("--description", required=True)
@click.option("--product-model", default="")
@click.pass_context
def ticket_create(ctx: click.Context, phone: str, ticket_type: str, urgency: str, priority: str | None,
                  description: str, product_model: str) -> None:
    """Open a ticket for the customer with this number; prints the ticket number."""
    from models.directory import customer_for_number
    from models.phone import normalize
    from models.ticketing import create_ticket

    settings = settings_of(ctx)
    e164 = normalize(phone, settings.general.phone_region)
    if e164 is None:
        raise click.BadParameter(f"not a valid phone number: {phone!r}", param_hint="--phone")
    with session_scope(settings) as session:
        created = create_ticket(
            session, settings, ticket_type=TicketType(ticket_type), urgency=Urgency(urgency),
            priority=Priority(priority) if priority else None, description=description, phone=e164,
            customer=customer_for_number(session, e164), product_model=product_model,
        )
        number = created.number
    click.echo(number)


@ticket.command("resolve")
@click.argument("number")
@click.option("--note", required=True, help="The result delivered to the customer (处理结果).")
@click.pass_context
def ticket_resolve(ctx: click.Context, number: str, note: str) -> None:
    """Mark the result delivered: the ticket is resolved and its revisit scheduled (satisfaction or complaint)."""
    from models.callbacks import CallbackError, callback_as_dict, due_now, resolve_ticket
    from workers.dispatch import enqueue_callback

    settings = settings_of(ctx)
    with session_scope(settings) as session:
        found = session.scalar(select(Ticket).where(Ticket.number == number))
        if found is None:
            raise click.ClickException(f"no ticket {number}")
        try:
            callback = resolve_ticket(session, settings, found, note)
        except CallbackError as exc:
            raise click.ClickException(str(exc)) from exc
        shown = f"callback {callback.id} ({callback.kind.value}) to {callback.phone} by {callback_as_dict(callback, settings)['latest']}"
        due = due_now(callback)
    if due is not None:
        enqueue_callback(settings, due.callback_id, due.number, due.at)
    click.echo(f"{number} resolved; {shown}")


@ticket.command("show")
@click.argument("number")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def ticket_show(ctx: click.Context, number: str, as_json: bool) -> None:
    """Show a ticket with its audit trail."""
    from models.ticketing import ticket_as_dict

    with session_scope(settings_of(ctx)) as session:
        found = session.scalar(select(Ticket).where(Ticket.number == number))
        if found is None:
            raise click.ClickException(f"no ticket {number}")
        data = ticket_as_dict(found)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for key in ("number", "type", "urgency", "priority", "status", "phone", "customer_name", "description",
                "response_due_at", "resolution_due_at"):
        click.echo(f"{key:18} {data[key]}")
    for event in data["events"]:
        change = f" {event['field']}: {event['old_value']} → {event['new_value']}" if event["field"] else ""
        click.echo(f"  {event['at']} {event['kind']}{change} {event['text']}")


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the whole system: web UI, SIP endpoint (and the local PBX), worker, scheduler.

    The SIP endpoint starts at once; the others once the database answers and its schema is upgraded.
    """
    settings = settings_of(ctx)
    live_workers = [["worker", "--queue", LIVE_QUEUE]] * settings.transcription.live_workers
    services = [["web"], ["sip"], ["worker"], *live_workers, ["scheduler"]]
    sys.exit(run_services(services, settings))


from hotline.commands.agent import agent  # noqa: E402  (commands import settings_of from here)
from hotline.commands.callbacks import callbacks  # noqa: E402
from hotline.commands.calls import calls  # noqa: E402
from hotline.commands.queue import queue  # noqa: E402
from hotline.commands.sip import sip  # noqa: E402

main.add_command(web)
main.add_command(sip)
main.add_command(worker)
main.add_command(scheduler)
main.add_command(calls)
main.add_command(callbacks)
main.add_command(queue)
main.add_command(agent)

from hotline.commands.transcribe import transcribe  # noqa: E402

main.add_command(transcribe)

from hotline.commands.demo import demo  # noqa: E402

main.add_command(demo)
