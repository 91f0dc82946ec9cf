"""``hotline demo``: the whole system, with baresip customers calling and baresip agents registered."""

from __future__ import annotations

import sys

import click


@click.command("demo")
@click.option("--customers", default=3, show_default=True, type=click.IntRange(1, 20),
              help="How many customers call, a few seconds apart.")
@click.option("--keep-running/--once", default=True, show_default=True,
              help="Keep every service running after the calls (until Ctrl-C), or stop once they end.")
@click.option("--phone-ports", "phone_port", default=5080, show_default=True, type=click.IntRange(1025, 6500),
              help="First SIP port of the demo's softphones (two each; RTP on ten times the SIP port); "
                   "the port below it is the demo's own, asking the PBX who registered.")
@click.pass_context
def demo(ctx: click.Context, customers: int, keep_running: bool, phone_port: int) -> None:
    """Start Hotline on its defaults and call it from real SIP softphones (baresip, espeak-ng speech).

    With --once it exits 0 only if every customer's call was answered and recorded.
    """
    from hotline.cli import init, run, settings_of
    from hotline.demo import Demo, missing_binaries

    missing = missing_binaries()
    if missing:
        raise click.ClickException(f"the demo needs {', '.join(missing)}: apt-get install baresip espeak-ng sox")
    settings = settings_of(ctx)
    if not settings.uses_local_pbx:
        raise click.ClickException("the demo runs its own local PBX: unset [sip] pbx_host")
    ctx.invoke(init)  # config, database and an admin (its password printed) on a fresh installation
    runner = Demo(settings, customers=customers, phone_port=phone_port, keep_running=keep_running,
                  echo=click.echo)
    runner.prepare()
    sys.exit(runner.run(lambda: ctx.invoke(run)))  # the services exactly as `hotline run` starts them
