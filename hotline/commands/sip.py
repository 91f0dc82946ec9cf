"""``hotline sip``: the SIP endpoint answering the hotline numbers (and the local PBX)."""

from __future__ import annotations

import logging
import threading

import click

from config import Settings

log = logging.getLogger(__name__)


@click.command("sip")
@click.option("--verbose", is_flag=True, help="Log every call step.")
@click.pass_context
def sip(ctx: click.Context, verbose: bool) -> None:
    """Register the hotline numbers, answer, greet and record calls until stopped (SIGTERM).

    Calls are answered whatever state the database is in: the call log waits in the journal.
    """
    from hotline.cli import settings_of
    from telephony.service import HotlineService

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_of(ctx)
    # A look, not a wait: a server that does not answer must not hold up the first call.
    threading.Thread(target=report_database, args=(settings,), name="database-check", daemon=True).start()
    HotlineService(settings).run_forever()


def report_database(settings: Settings) -> None:
    """Log once, at start, why the call log cannot be written yet (down, refused, not initialised)."""
    from models.db import DatabaseUnavailable, check_database

    try:
        check_database(settings)
    except DatabaseUnavailable as problem:
        log.warning("%s; answering calls anyway: the call log waits in the journal until it can be written", problem)
