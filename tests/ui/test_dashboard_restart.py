"""A browser whose engine restarted: the new engine knows no session, the page says so and
asks for a login instead of retrying forever; the API token logs it in again."""
from __future__ import annotations

import re

from cryptography.fernet import Fernet
from playwright.sync_api import expect

from tests.engine_kit import EngineProcess
from tests.kit import free_port


def test_page_asks_for_a_login_after_an_engine_restart(browser_context, tmp_path):
    env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode()}
    port = str(free_port())
    first = EngineProcess(tmp_path / "data", ["123"], "--api-port", port, "--no-demo", env=env)
    second = None
    page = browser_context.new_page()
    try:
        first.wait_ready("123")
        page.goto(re.search(r"dashboard: (\S+)", first.output()).group(1))
        expect(page.locator("#live")).to_have_text("live", timeout=20_000)
        assert first.interrupt(30) == 0
        second = EngineProcess(tmp_path / "data", ["123"], "--api-port", port, "--no-demo", env=env)
        expect(page.locator("#login")).to_be_visible(timeout=30_000)
        expect(page.locator("#login-error")).to_contain_text("no longer knows this session")
        page.fill("#login-token", (tmp_path / "data" / "api.token").read_text().strip())
        page.click("#login-form button")
        expect(page.locator("#live")).to_have_text("live", timeout=20_000)
        expect(page.locator("#accounts-table tbody tr[data-account='123']")).to_be_visible()
    finally:
        page.close()
        first.kill()
        if second is not None:
            second.kill()
