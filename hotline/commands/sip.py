"""``hotline sip``: the SIP endpoint answering the hotline numbers (and the local PBX)."""

from __future__ import annotations

import logging

import click


@click.command("sip")
@click.option("--verbose", is_flag=True, help="Log every call step.")
@click.pass_context
def sip(ctx: click.Context, verbose: bool) -> None:
    """Register the hotline numbers, answer, greet and record calls until stopped (SIGTERM)."""
    from hotline.cli import settings_of
    from models.db import upgrade
    from telephony.service import HotlineService

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_of(ctx)
    upgrade(settings)
    HotlineService(settings).run_forever()
