"""``hotline agent``: an agent's state (available, paused, logged out) and the agents' list."""

from __future__ import annotations

import json

import click

from models.agent import AgentState
from models.agents import CHOSEN_STATES, AgentStateError, agent_named, choose
from workers import bus


@click.group("agent")
def agent() -> None:
    """Agents: users taking calls on their extension."""


@agent.command("state")
@click.argument("name")
@click.argument("state", type=click.Choice(sorted(s.value for s in CHOSEN_STATES)))
@click.option("--reason", default="", help="Why they pause (午休, 培训 …).")
@click.pass_context
def agent_state(ctx: click.Context, name: str, state: str, reason: str) -> None:
    """Make user NAME available for calls, pause them (with a reason) or log them out."""
    from hotline.cli import settings_of
    from models.db import session_scope

    settings = settings_of(ctx)
    bus.install(settings)  # the desks, wallboards and distributors hear of the change at once
    try:
        with session_scope(settings) as session:
            found = agent_named(session, name)
            if found is None:
                raise click.ClickException(f"no user {name!r}")
            if not choose(session, found, AgentState(state), reason=reason, source="cli"):
                # Another process (the distributor, the desk) changed them between our read and our write.
                raise click.ClickException(f"{name} changed meanwhile and is {found.state.value}; try again")
            now = f"{found.state.value}{f' ({found.reason})' if found.reason else ''}"
    except AgentStateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name} is {now}")


@agent.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def agent_list(ctx: click.Context, as_json: bool) -> None:
    """Every agent by name: extension, state since when (and why), skills."""
    from hotline.cli import settings_of
    from models.board import agent_row, agents_by_name
    from models.db import session_scope

    with session_scope(settings_of(ctx)) as session:
        rows = [{**agent_row(found), "reason": found.reason, "skills": [str(skill) for skill in found.user.skills]}
                for found in agents_by_name(session)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        reason = f" ({row['reason']})" if row["reason"] else ""
        click.echo(f"{row['name']:<16} {row['extension'] or '-':<8} {row['state'] + reason:<20} since {row['since']}"
                   f"  {', '.join(row['skills']) or '-'}")
    if not rows:
        click.echo("no agents yet: `hotline agent state NAME available` makes a user with an extension one")

