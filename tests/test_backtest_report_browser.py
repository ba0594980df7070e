"""The HTML report opened in a real browser (headless Chromium) with the network cut off:
every chart draws, with its candles and its entry and exit markers."""
import re
import shutil
import subprocess

import pytest

from maotrade.backtest import BacktestConfig, run_backtest
from maotrade.backtest.html import write_html
from tests.test_backtest_portfolio import A, B, Recorder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (scripts/test installs it)")
def test_the_report_draws_every_chart_offline_in_a_browser(tmp_path):
    script = {("A", 60, 0): [("open_order", {"epic": "A", "qty": 10, "stop_loss": 92.0})],
              ("B", 120, 0): [("open_order", {"epic": "B", "qty": 20, "take_profit": 55.0})]}
    result = run_backtest(Recorder, {"subscriptions": [("A", 60), ("B", 120)], "script": script},
                          {"A": A, "B": B}, BacktestConfig("A", 60, initial_balance=10_000))
    page = write_html(result, tmp_path / "report.html", title="Backtest two instruments")
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                          "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: all must be in the page
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    titles = re.findall(r'data-unformatted="([^"]+)"', dom)
    assert "A: price, entries and exits" in titles and "B: price, entries and exits" in titles
    assert "Equity and drawdown" in titles
    assert dom.count('class="trace boxes"') == 2, "one candle trace per instrument"
    # Entries and exits of both instruments, equity and drawdown: scatter traces drawn as SVG paths.
    assert len(re.findall(r'class="trace scatter', dom)) >= 6
    assert "Per instrument" in dom and "take profit" in dom and "stop loss" in dom
