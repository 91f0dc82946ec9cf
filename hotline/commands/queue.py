"""``hotline queue``: call queues — their numbers, skills and timers — and who waits in them now."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from click.core import ParameterSource
from sqlalchemy.orm import Session

from config import Settings

from models.queue import Queue
from models.queues import QueueError, add_queue, all_queues, parse_seconds, queue_named, set_queue, timers


class Seconds(click.ParamType):
    """A number of seconds, or ``""``: back to the ``[queues]`` default."""

    name = "SECONDS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        try:
            return parse_seconds(None if value is None else str(value))  # click may pass a converted value again
        except QueueError as exc:
            self.fail(str(exc), param, ctx)


def _queue_options(command: Callable[..., None]) -> Callable[..., None]:
    """The settings ``queue add`` and ``queue set`` share; an option not given changes nothing."""
    options = [
        click.option("--number", "numbers", multiple=True, metavar="N", help="A hotline number whose callers it takes; repeatable "
                     "(given numbers replace the queue's)."),
        click.option("--skill", "skills", multiple=True, metavar="S", help="A skill its agents need, NAME or NAME:LEVEL; "
                     "repeatable (given skills replace the queue's)."),
        click.option("--display-name", help="The name callers hear in the menu."),
        click.option("--wrap-up", "wrap_up_seconds", type=Seconds(), help="Wrap-up seconds after each call "
                     "(\"\": the [queues] default)."),
        click.option("--ring-timeout", "ring_timeout_seconds", type=Seconds(),
                     help="Seconds an agent's phone rings before the next agent (\"\": the default)."),
        click.option("--announce", "announce_seconds", type=Seconds(),
                     help="Position announcement period in seconds (\"\": the default)."),
        click.option("--max-wait", "max_wait_seconds", type=Seconds(),
                     help="Seconds before a caller overflows; 0 never (\"\": the default)."),
        click.option("--virtual-hold-after", "virtual_hold_after_seconds", type=Seconds(),
                     help="Seconds before a waiting caller is offered to keep their place and be called back; 0 never "
                     "(\"\": the default)."),
        click.option("--overflow", metavar="QUEUE", help="Queue callers overflow to (\"\": none)."),
        click.option("--menu-key", metavar="DIGIT", help="DTMF digit 1-9 choosing this queue on a shared number (\"\": none, the "
                     "number's default queue)."),
        click.option("--language", metavar="L", help="Language of its callers, e.g. yue (\"\": the transcription default)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _given(ctx: click.Context, options: dict[str, Any]) -> dict[str, Any]:
    """The options given on the command line, as ``set_queue`` fields (``""`` clears a menu key or language)."""
    fields: dict[str, Any] = {}
    for name, value in options.items():
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        if isinstance(value, tuple):
            value = list(value)
        elif value == "" and name in ("menu_key", "language"):
            value = None
        fields[name] = value
    return fields


def _settings(ctx: click.Context) -> Settings:
    from hotline.cli import settings_of  # not at the top: hotline.cli imports this module

    return settings_of(ctx)


@contextmanager
def _queues(ctx: click.Context) -> Iterator[Session]:
    """A session whose queue rule errors end the command with their one-line reason (exit 1)."""
    from models.db import session_scope

    try:
        with session_scope(_settings(ctx)) as session:
            yield session
    except QueueError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("queue")
def queue() -> None:
    """Call queues: numbers, skills, timers; who waits now."""


@queue.command("add")
@click.argument("name")
@_queue_options
@click.pass_context
def queue_add(ctx: click.Context, name: str, **options: Any) -> None:
    """Add a queue."""
    with _queues(ctx) as session:
        summary = _line(queue_as_dict(add_queue(session, name, **_given(ctx, options)), _settings(ctx)))
    click.echo(f"added queue {summary}")


@queue.command("set")
@click.argument("name")
@_queue_options
@click.pass_context
def queue_set(ctx: click.Context, name: str, **options: Any) -> None:
    """Change a queue: only the options given."""
    with _queues(ctx) as session:
        found = queue_named(session, name)
        if found is None:
            raise QueueError("no queue '%(name)s'", name=name)
        summary = _line(queue_as_dict(set_queue(session, found, **_given(ctx, options)), _settings(ctx)))
    click.echo(f"changed queue {summary}")


@queue.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def queue_list(ctx: click.Context, as_json: bool) -> None:
    """Every queue with its numbers, skills and timers (its own, or the [queues] defaults)."""
    with _queues(ctx) as session:
        rows = [queue_as_dict(found, _settings(ctx)) for found in all_queues(session)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(_line(row))
    if not rows:
        click.echo(f"no queues yet: `hotline init` creates {_settings(ctx).queues.default_queue!r}")


@queue.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def queue_status_command(ctx: click.Context, as_json: bool) -> None:
    """Who waits in each queue (next first) and what every agent is doing."""
    from models.board import queue_status

    with _queues(ctx) as session:
        status = queue_status(session, _settings(ctx))
    if as_json:
        click.echo(json.dumps(status, ensure_ascii=False, indent=2))
        return
    for row in status["queues"]:
        click.echo(f"{row['name']} ({', '.join(row['numbers']) or 'no number'}): {len(row['waiting'])} waiting")
        for caller in row["waiting"]:
            click.echo(f"  {caller['position']:>3}. {caller['caller_id']:<16} {caller['waited_s']:>7.1f} s"
                       f"  call {caller['call_id']}")
    click.echo("agents:" if status["agents"] else "no agents yet")
    for agent in status["agents"]:
        click.echo(f"  {agent['name']:<16} {agent['extension'] or '-':<8} {agent['state']:<10} since {agent['since']}"
                   f"{'  call ' + agent['call_id'] if agent['call_id'] else ''}")


def queue_as_dict(found: Queue, settings: Settings) -> dict[str, Any]:
    timer = timers(found, settings)
    return {
        "name": found.name,
        "display_name": found.display_name,
        "numbers": list(found.numbers),
        "skills": list(found.skills),
        "menu_key": found.menu_key,
        "language": found.language,
        "ring_timeout_s": timer.ring_timeout,
        "wrap_up_s": timer.wrap_up,
        "announce_s": timer.announce,
        "max_wait_s": timer.max_wait,
        "virtual_hold_after_s": timer.virtual_hold_after,
        "overflow": found.overflow_queue.name if found.overflow_queue else None,
    }


def _line(row: dict[str, Any]) -> str:
    numbers = ", ".join(row["numbers"]) or "no number"
    key = f" key {row['menu_key']}" if row["menu_key"] else ""
    skills = f" skills {', '.join(row['skills'])}" if row["skills"] else ""
    overflow = f" → {row['overflow']}" if row["overflow"] else ""
    kept = f", virtual hold after {row['virtual_hold_after_s']:g} s" if row["virtual_hold_after_s"] else ""
    return (f"{row['name']} ({numbers}{key}){skills}: ring {row['ring_timeout_s']:g} s, wrap-up {row['wrap_up_s']:g} s,"
            f" announce {row['announce_s']:g} s, max wait {row['max_wait_s']:g} s{overflow}{kept}")
