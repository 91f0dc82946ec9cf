"""A person's view: real Chromium logs in to `hotline web` and sees the calls page in Chinese."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from models.calllog import log_inbound
from tests.webui.conftest import PASSWORD

PORT = 18081
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture
def web_server(app, settings):
    process = subprocess.Popen(["hotline", "web", "--port", str(PORT)], env=os.environ.copy())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{PORT}"
    process.terminate()
    process.wait(10)


@pytest.mark.browser
def test_agent_logs_in_and_sees_a_ringing_call(web_server, db, settings, tmp_path: Path):
    log_inbound(db, settings, caller="13800138000", callee="1000", sip_call_id="x")
    db.commit()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(locale="zh-CN")
        page.goto(f"{web_server}/")
        page.fill("input[name=username]", "zhang")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("text=实时通话 (1)")
        assert "+8613800138000" in page.content()
        page.screenshot(path=str(tmp_path / "calls.png"), full_page=True)
        browser.close()
