"""The dashboard in a real browser against a real engine: log in with the printed URL, watch a
strategy's fill arrive live, halt an account and see its orders refused, cancel-all, flatten.

The tests run in order on one page (each step starts from what the previous one left) and
save a screenshot at every step under build/ui-screenshots/.
"""
from __future__ import annotations

import json
import re

import pytest
import requests
from playwright.sync_api import expect

from tests.engine_kit import run_cli
from tests.ui.conftest import API_TOKEN, SHOTS, BOT_TOKEN as BOT_TOKEN_IN_OUTPUT

WAIT_MS = 20_000


@pytest.fixture(scope="module")
def page(browser_context, ui_stack):
    page = browser_context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    yield page
    page.close()


def account_row(page, account):
    return page.locator(f"#accounts-table tbody tr[data-account='{account}']")


def confirm(page, expected_text):
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text(expected_text)
    page.locator("#confirm-yes").click()
    expect(dialog).to_be_hidden()


def test_login_url_shows_accounts_with_state_and_balance(page, ui_stack, shots):
    url = ui_stack.login_url()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/ui/#token=[\w-]{40,}", url), url
    page.goto(url)
    row = account_row(page, "123")
    expect(row).to_be_visible(timeout=WAIT_MS)
    expect(row.locator(".pill").first).to_have_text("ready")
    expect(row.locator("td.balance")).to_have_text("100,000.00")
    expect(account_row(page, "124")).to_be_visible()
    ig = account_row(page, "125")
    expect(ig.locator("td").nth(1)).to_have_text("ig")
    expect(ig.locator(".pill").first).to_have_text("ready")
    expect(ig.locator("td.balance")).to_have_text("10,000.00")
    ib = account_row(page, "126")
    expect(ib.locator("td").nth(1)).to_have_text("ib")
    expect(ib.locator(".pill").first).to_have_text("ready")
    expect(row.locator("td.data")).to_have_text("1 ok")  # the strategy's EURUSD bars
    expect(ib.locator("td.data")).to_have_text("none")
    expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
    assert "token" not in page.url, "the login token must leave the address bar"
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["maotrade_session"]["httpOnly"] and cookies["maotrade_session"]["sameSite"] == "Strict"
    shots(page, "logged-in")
    # The token was spent: a second browser cannot use the same link.
    answer = requests.post(f"{ui_stack.url}/ui/api/login", json={"token": url.split("#token=")[1]}, timeout=5)
    assert answer.status_code == 401


def test_strategy_fill_appears_without_reload(page, ui_stack, shots):
    page.evaluate("window.__same_document = true")
    ui_stack.strategy_trades("buy", "123", 1000)
    filled = ui_stack.strategy_order("buy", {"FILLED"})
    fill_feed = page.locator("#feed li.fill", has_text="FILL BUY 1,000")
    expect(fill_feed).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#positions-table tbody tr[data-epic='EURUSD'] td").nth(1)).to_have_text("1,000",
                                                                                              timeout=WAIT_MS)
    expect(page.locator("#fills-table tbody", has_text=filled["client_order_id"])).to_be_visible(timeout=WAIT_MS)
    assert page.evaluate("window.__same_document") is True, "the page reloaded"
    # A working order to cancel later: a LIMIT buy far below the market.
    ui_stack.strategy_trades("resting", "123", 100, order_type="LIMIT", price=0.5)
    resting = ui_stack.strategy_order("resting", {"ACCEPTED", "SUBMITTED"})
    expect(page.locator(f"#orders-table tbody tr[data-order='{resting['client_order_id']}']")).to_be_visible(
        timeout=WAIT_MS)
    ui_stack.strategy_trades("resting-2", "123", 200, order_type="LIMIT", price=0.4)
    second = ui_stack.strategy_order("resting-2", {"ACCEPTED", "SUBMITTED"})
    expect(page.locator(f"#orders-table tbody tr[data-order='{second['client_order_id']}']")).to_be_visible(
        timeout=WAIT_MS)
    expect(account_row(page, "123").locator("td.orders")).to_have_text("2")
    shots(page, "fill-and-working-order")


def test_kill_switch_halts_and_orders_are_refused(page, ui_stack, shots):
    page.locator("#account-kill button[data-mode='halted']").click()
    confirm(page, "account 123 to HALTED")
    expect(account_row(page, "123").locator(".pill").nth(1)).to_have_text("halted", timeout=WAIT_MS)
    expect(account_row(page, "124").locator(".pill").nth(1)).to_have_text("active")
    ui_stack.strategy_trades("refused", "123", 500)
    refused = ui_stack.strategy_order("refused", {"REJECTED"})
    assert "kill switch is halted" in refused["reason"], refused
    expect(page.locator("#feed li.reject", has_text="kill switch is halted")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#denials-table tbody", has_text="kill switch halted")).to_be_visible(timeout=WAIT_MS)
    shots(page, "halted-order-refused")


def test_cancel_one_order_from_its_row_then_cancel_all(page, ui_stack, shots):
    second = ui_stack.strategy_order("resting-2", {"ACCEPTED", "SUBMITTED"})
    row = page.locator(f"#orders-table tbody tr[data-order='{second['client_order_id']}']")
    row.locator("button").click()
    confirm(page, f"Cancel LIMIT BUY 200 EURUSD ({second['client_order_id']}) on account 123?")
    ui_stack.strategy_order("resting-2", {"CANCELLED"})
    expect(row).to_be_hidden(timeout=WAIT_MS)
    page.locator("#account-cancel-all").click()
    confirm(page, "Cancel every working order of account 123")
    ui_stack.strategy_order("resting", {"CANCELLED"})
    expect(page.locator("#orders-table tbody")).to_have_text("no working orders", timeout=WAIT_MS)
    expect(page.locator("#feed li", has_text="cancel-all by dashboard: 1 cancel(s)")).to_be_visible()
    expect(account_row(page, "123").locator("td.orders")).to_have_text("0")
    shots(page, "cancel-all")


def test_flatten_closes_the_position_and_leaves_reduce_only(page, ui_stack, shots):
    page.locator("#account-flatten").click()
    confirm(page, "close every position AT MARKET")
    expect(page.locator("#positions-table tbody tr[data-epic='EURUSD'] td").nth(1)).to_have_text("0",
                                                                                              timeout=WAIT_MS)
    expect(account_row(page, "123").locator(".pill").nth(1)).to_have_text("reduce only", timeout=WAIT_MS)
    expect(page.locator("#feed li.fill", has_text="FILL SELL 1,000")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#feed li", has_text="flatten by dashboard: 0 cancel(s), 1 close(s)")).to_be_visible()
    shots(page, "flattened")
    assert not page.errors, page.errors


def test_broker_outage_shows_with_its_reason_and_recovers(page, ui_stack, shots):
    ig = account_row(page, "125")
    ui_stack.ig.refuse_rest = True  # IG answers 503 to everything from now on
    ui_stack.engine.send("account_info_request", account="125")
    expect(ig.locator(".pill").first).to_have_text(re.compile("reconnecting|disconnected"), timeout=WAIT_MS)
    expect(ig).to_contain_text("503")
    expect(page.locator("#feed li.ev-account_status", has_text="503").first).to_be_visible()
    shots(page, "ig-outage")
    ui_stack.ig.refuse_rest = False
    expect(ig.locator(".pill").first).to_have_text("ready", timeout=30_000)


def test_actions_need_session_and_csrf(ui_stack):
    base = f"{ui_stack.url}/ui/api"
    assert requests.get(f"{base}/overview", timeout=5).status_code == 401
    session = requests.Session()
    login = session.post(f"{base}/login", json={"token": API_TOKEN}, timeout=5)
    assert login.status_code == 200
    csrf = login.json()["csrf"]
    assert session.get(f"{base}/overview", timeout=5).json()["accounts"][0]["account"] == "123"
    body = {"mode": "halted", "account": "124"}
    assert session.post(f"{base}/kill-switch", json=body, timeout=5).status_code == 403  # no CSRF token
    wrong = session.post(f"{base}/kill-switch", json=body, headers={"X-CSRF-Token": "x" * 32}, timeout=5)
    assert wrong.status_code == 403
    foreign = session.post(f"{base}/kill-switch", json=body, timeout=5,
                           headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    status = requests.get(f"{ui_stack.url}/api/risk", headers={"Authorization": f"Bearer {API_TOKEN}"},
                          timeout=5).json()
    assert status["kill_switch"]["accounts"]["124"] == "active", "a refused action changed something"
    assert requests.post(f"{base}/login", json={"token": "guess"}, timeout=5).status_code == 401


def test_telegram_heard_the_fill_the_halt_and_the_flatten(ui_stack):
    texts = ui_stack.telegram.wait_texts(lambda t: any("flatten by dashboard" in x for x in t))
    assert any(x.startswith("[123] FILL BUY 1000 @ ") for x in texts), texts
    assert "[123] kill switch HALTED" in texts
    assert any(x.startswith("[123] RISK DENIED BUY 500 EURUSD: kill switch is halted") for x in texts), texts
    assert any(x.startswith("[123] FILL SELL 1000 @ ") for x in texts), texts
    assert not any("[124]" in x for x in texts), "account 124 has no route"
    outage = ui_stack.telegram.wait_texts(lambda t: any(x.startswith("[125] reconnected") for x in t))
    assert any(x.startswith("[125] RECONNECTING") or x.startswith("[125] DISCONNECTED") for x in outage), outage
    assert BOT_TOKEN_IN_OUTPUT not in ui_stack.engine.output()
    assert BOT_TOKEN_IN_OUTPUT not in (ui_stack.engine.data_dir / "logs" / "maotrade.log").read_text()


def test_a_backtest_report_is_listed_and_opens_in_the_page(page, ui_stack, shots):
    expect(page.locator("#reports-table tbody")).to_contain_text("no reports yet", timeout=WAIT_MS)
    done = run_cli("backtest", "--strategy", "maotrade.examples.ma_cross:MovingAverageCross", "--sample",
                   "--epic", "EURUSD", "--no-chart", "--no-progress", "--data-dir", str(ui_stack.engine.data_dir),
                   timeout=180)
    assert done.returncode == 0, done.stderr
    folder = next((ui_stack.engine.data_dir / "reports").iterdir())
    metrics = json.loads((folder / "results.json").read_text())["metrics"]
    page.locator("#reports-refresh").click()
    row = page.locator("#reports-table tbody tr[data-report]")
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(row.locator("td").nth(1)).to_have_text("maotrade.examples.ma_cross:MovingAverageCross")
    expect(row.locator("td").nth(2)).to_have_text("EURUSD")
    expect(row.locator("td").nth(4)).to_have_text(f"{100 * metrics['total_return']:.2f}%")
    expect(row.locator("td").nth(8)).to_have_text(str(metrics["trades"]))
    expect(row.locator("td").nth(9)).to_have_text(folder.name)
    row.click()
    frame = page.frame_locator("#report-frame")
    expect(frame.locator("h1")).to_have_text("Backtest maotrade.examples.ma_cross:MovingAverageCross",
                                             timeout=WAIT_MS)
    expect(frame.locator(".plotly").first).to_be_visible(timeout=WAIT_MS)  # its embedded scripts ran
    expect(page.locator("#report-newtab")).to_have_attribute("href", re.compile(r"^/ui/reports/[0-9a-f]{16}/report\.html$"))
    shots(page, "backtest-report")
    # A full-page capture does not always paint the frame (it is rendered apart, sandboxed): the
    # panel is also shot as a person sees it, scrolled to just below the sticky top bar.
    page.locator("#reports").evaluate("e => window.scrollTo(0, e.getBoundingClientRect().top + scrollY - 50)")
    page.screenshot(path=str(SHOTS / "backtest-report-panel.png"))
    assert not page.errors, page.errors


def test_engine_stops_cleanly_while_the_page_streams(page, ui_stack, shots):
    expect(page.locator("#live")).to_have_text("live")
    assert ui_stack.engine.interrupt(30) == 0
    assert "stopped cleanly" in ui_stack.engine.output()
    expect(page.locator("#live")).to_have_text("reconnecting", timeout=WAIT_MS)
    shots(page, "engine-stopped")
