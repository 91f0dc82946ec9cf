"""The hotline CLI: init → user add → ticket create → ticket show --json, config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hotline.cli import main


def hotline(*args: str, stdin: str = "", env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real installed entry point, as a user runs it."""
    return subprocess.run(["hotline", *args], input=stdin, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_round_trip_through_the_installed_command(hotline_env):
    init = hotline("init", env=hotline_env)
    assert init.returncode == 0, init.stderr
    assert "log in at http://127.0.0.1:8080/ as 'admin' with password" in init.stdout
    assert Path(hotline_env["HOTLINE_CONFIG"]).exists()

    added = hotline("user", "add", "zhang", "--role", "agent", "--extension", "1001", "--skill", "粤语",
                    "--password-stdin", stdin="agent-pass-1\n", env=hotline_env)
    assert added.returncode == 0, added.stderr
    assert "extension 1001" in added.stdout

    created = hotline("ticket", "create", "--phone", "138 0013 8000", "--type", "repair", "--urgency", "urgent",
                      "--description", "洗衣机不脱水", env=hotline_env)
    assert created.returncode == 0, created.stderr
    number = created.stdout.strip()
    assert number.startswith("SS") and len(number) == len("SS20261123001")

    shown = hotline("ticket", "show", number, "--json", env=hotline_env)
    ticket = json.loads(shown.stdout)
    assert (ticket["number"], ticket["type"], ticket["urgency"], ticket["priority"]) == (number, "repair", "urgent", "P2")
    assert ticket["phone"] == "+8613800138000" and ticket["description"] == "洗衣机不脱水"
    assert [e["kind"] for e in ticket["events"]] == ["created"]


def test_init_twice_keeps_the_admin_and_upgrades(settings, cli):
    assert cli.invoke(main, ["init"]).exit_code == 0
    again = cli.invoke(main, ["init"])
    assert again.exit_code == 0 and "an admin exists already" in again.output


def test_user_add_refuses_duplicates_and_short_passwords(settings, cli):
    args = ["user", "add", "li", "--role", "qa", "--extension", "1002", "--password-stdin"]
    assert cli.invoke(main, args, input="long-enough\n").exit_code == 0
    dup = cli.invoke(main, ["user", "add", "wu", "--role", "qa", "--extension", "1002", "--password-stdin"],
                     input="long-enough\n")
    assert dup.exit_code == 1 and "extension 1002 belongs to another user" in dup.output
    short = cli.invoke(main, ["user", "add", "he", "--role", "qa", "--password-stdin"], input="abc\n")
    assert short.exit_code == 1 and "at least 8" in short.output
    bad_role = cli.invoke(main, ["user", "add", "x", "--role", "boss", "--password-stdin"], input="long-enough\n")
    assert bad_role.exit_code == 2


def test_ticket_create_rejects_a_bad_phone(settings, cli):
    result = cli.invoke(main, ["ticket", "create", "--phone", "12", "--type", "inquiry", "--description", "x"])
    assert result.exit_code == 2 and "not a valid phone number" in result.output


def test_ticket_show_unknown_number(settings, cli):
    result = cli.invoke(main, ["ticket", "show", "TS20990101001"])
    assert result.exit_code == 1 and "no ticket TS20990101001" in result.output


def test_bad_config_exits_2_naming_the_key(hotline_env, tmp_path):
    Path(hotline_env["HOTLINE_CONFIG"]).write_text("[sip]\nmax_rings = 'many'\n", encoding="utf-8")
    result = hotline("db", "upgrade", env=hotline_env)
    assert result.returncode == 2
    assert "sip.max_rings" in result.stderr and "Traceback" not in result.stderr
